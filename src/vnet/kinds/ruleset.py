"""vnet's nftables tables (inet for routing and NAT, bridge for its ports): one resource, replaced
in one transaction. Rendered by nftrules.py; observed over nfnetlink by digest and rule count."""

from __future__ import annotations

from vnet import names, nftrules, snoop
from vnet.drivers import nft
from vnet.facts import HostFacts
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet.spec.models import Topology


def _saved(ctx: Ctx):
    return ctx.state / "ruleset.nft"


class Ruleset(Kind):
    name = "ruleset"
    after = ("route",)  # names links that exist by then
    # the rules name links as strings, so they load while the ports are being made: off the
    # critical path, and a new port goes unguarded at most until they are loaded, not until the
    # addresses and routes are done too. A flowtable's devices must exist: the bridges (the other
    # devices, nat networks' uplinks, are the host's own)
    starts_after = ("bridge",)
    observe_early = True

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        rules = nftrules.render(topo, facts)
        if rules is None:
            return []
        return [make("ruleset", names.nft_table(topo.name), {"text": rules.text, "rendered": True},
                     digest=rules.digest, elements=rules.elements, rules=rules.rules)]

    def observe(self, view, obs) -> None:
        host = view.nss.host
        obs.tables, rule_counts = nft.dump(host)
        r = nft.observe_table(host, names.nft_table(view.topology), obs.tables, rule_counts)
        if r is not None and r.get("digest") is not None:
            obs.add(r)

    def complete(self, ctx: Ctx, r: Resource) -> Resource:
        # observing lists tables terse, so its cost does not grow with forwards; the text to
        # restore them is read only when they are about to change
        return nft.with_text(ctx.nss.host, r, _saved(ctx)) if r.get("text") is None else r

    def create(self, ctx: Ctx, r: Resource) -> None:
        nft.replace(ctx.nss.host, r, None, _saved(ctx), refill=snoop.reseed(r.key, ctx.state))

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        # tables replaced whole start with an empty `leased` set: the running leases go back in,
        # in the same transaction
        nft.replace(ctx.nss.host, new, old, _saved(ctx), refill=snoop.reseed(new.key, ctx.state))

    def delete(self, ctx: Ctx, r: Resource) -> None:
        nft.delete(ctx.nss.host, r, _saved(ctx))


KINDS = (Ruleset(),)
