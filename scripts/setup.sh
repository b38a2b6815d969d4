#!/usr/bin/env bash
# Installs what vnet's demo and tests need on a fresh Debian machine (as root), then the venv.
# Idempotent and quick when everything is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in ip:iproute2 nft:nftables iptables:iptables dnsmasq:dnsmasq-base busybox:busybox-static \
            nsenter:util-linux setpriv:util-linux ss:iproute2 qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils iperf3:iperf3 \
            dot:graphviz dhclient:isc-dhcp-client; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# FRR's zebra and bgpd for overlay control: evpn (vnet runs its own per target namespace)
[ -x /usr/lib/frr/bgpd ] && [ -x /usr/lib/frr/zebra ] || need+=(frr)
# frr-reload.py: a changed FRR config is applied in place (without it, FRR is restarted)
[ -x /usr/lib/frr/frr-reload.py ] || need+=(frr-pythontools)
# the guest kernel of vnet's tiny test guest (virtio_net as a module, as the guest builder expects)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need+=(linux-image-cloud-amd64)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "missing packages ${need[*]}: run as root to install them" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # packages' own services (frr's zebra and watchfrr) are not started in the root namespace
  policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"
  fi
  apt-get install -y -qq $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null || { [ -z "$policy" ] || rm -f "$policy"; exit 1; }
  [ -z "$policy" ] || rm -f "$policy"
fi

# the unprivileged user QEMU runs as (a VM's `user:` names another); in the kvm group for /dev/kvm
if ! getent passwd vnet-qemu >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vnet-qemu
  else
    echo "no user vnet-qemu (QEMU runs as it): run as root to create it" >&2
  fi
fi
if [ "$(id -u)" = 0 ] && getent group kvm >/dev/null && ! id -nG vnet-qemu | grep -qw kvm; then
  usermod -a -G kvm vnet-qemu
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
if ! .venv/bin/python -c 'import vnet, pyroute2, rich, yaml, pytest, hypothesis' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
fi
