"""The only code that touches the host: netlink, nftables, sysctl (and later dnsmasq, qemu)."""
