"""The script dnsmasq runs on each DHCP lease event (vnet.snoop): one file per network with DHCP,
in the topology's state directory, root's and 0700. Written before dnsmasq starts, so the leases
dnsmasq reads back at start are learned too."""

from __future__ import annotations

import os

from vnet import libdir, names, snoop
from vnet.facts import HostFacts
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet.spec.models import Topology


class DhcpScript(Kind):
    name = "dhcp_script"
    after = ("ruleset",)  # it adds to the ruleset's set
    starts_after = ("ruleset",)  # a file: written beside the links, before its dnsmasq starts

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        table = names.nft_table(topo.name)
        return [make("dhcp_script", f"dhcp-event-{n}", network=n, table=table, python=snoop.interpreter())
                for n, net in topo.networks.items() if net.dhcp is not None]

    def observe(self, view, obs) -> None:
        table = names.nft_table(view.topology)
        for path in sorted(libdir.named(view.state, "dhcp-event-")):
            network = path.name[len("dhcp-event-"):]
            try:
                st = path.stat()
                text = path.read_text()
            except OSError:
                continue
            if not text.startswith("#!/bin/sh\n" + snoop.MARK):
                continue  # not vnet's
            python = snoop.interpreter()
            try:
                expected = snoop.script_text(view.nss.host.name, table, python)
            except snoop.Invalid:
                expected = None
            if text != expected or st.st_uid != 0 or st.st_mode & 0o7777 != 0o700:
                python = None  # another interpreter, target or mode: written anew
            obs.add(make("dhcp_script", path.name, network=network, table=table, python=python))

    def create(self, ctx: Ctx, r: Resource) -> None:
        path = snoop.script_path(ctx.state, r.get("network"))
        text = snoop.script_text(ctx.nss.host.name, r.get("table"), r.get("python") or snoop.interpreter())
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o700)
        tmp.replace(path)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        snoop.script_path(ctx.state, r.get("network")).unlink(missing_ok=True)


KINDS = (DhcpScript(),)
