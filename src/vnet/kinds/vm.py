"""QEMU guests, supervised: a tap per NIC (made by vnet, opened by QEMU by name) and the process.

A VM that `vnet vm stop` stopped is marked so in the state directory (`vm-NAME.stopped`): its
taps stay, but the process is not wanted, so `plan` and `apply` leave it stopped until `vnet vm
start` clears the mark. That mark, the user's own wish, is the one thing desired state reads from
the host's state directory."""

from __future__ import annotations

from vnet import names, qemuargs
from vnet.drivers import process, qemu
from vnet.facts import HostFacts, bridge_name, hairpin_ports
from vnet.kinds.links import hairpin
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet.spec.models import Topology


class Vm(Kind):
    name = "vm"
    after = ("service", "tap")  # opens its taps and leases from the services; stops first

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out: list[Resource] = []
        hairpins = hairpin_ports(topo)
        for vm_name, vm in topo.vms.items():
            user = qemuargs.run_user(vm.user)  # QEMU runs as this user and opens the taps it owns
            for i, nic in enumerate(vm.nics):
                out.append(
                    make(
                        "tap",
                        qemuargs.nic_tap(topo, vm_name, i),
                        mark=names.link_mark(topo.name, "tap", f"{vm_name}.{i}"),
                        mode="tap",
                        owner=user.uid,
                        master=bridge_name(topo, nic.network),
                        mac=names.tap_mac(qemuargs.nic_mac(topo, vm_name, i)),
                        multi_queue=True if qemuargs.queues(topo, vm_name) > 1 else None,
                        mtu=topo.networks[nic.network].mtu,
                        **hairpin(qemuargs.nic_tap(topo, vm_name, i), hairpins),
                    )
                )
            vhost = facts.vhost_net and qemuargs.device_usable("/dev/vhost-net", user)
            argv = qemuargs.argv(topo, vm_name, facts.state, kvm=facts.kvm, vhost=vhost, tiny=facts.tiny_guest, user=user)
            inputs = qemuargs.inputs(topo, vm_name, facts.tiny_guest)
            if stopped(facts.state, vm_name):
                continue  # `vnet vm stop`: stays stopped
            out.append(make("vm", vm_name, {"argv": argv, "inputs": inputs}, digest=qemu.digest(argv, inputs)))
        return out

    def observe(self, view, obs) -> None:
        for r in qemu.observe(view.state):
            obs.add(r)

    def create(self, ctx: Ctx, r: Resource) -> None:
        if ctx.undoing:
            # putting back a VM that a failed or killed run stopped would mean running a command
            # line read from the state directory: vnet runs only the ones it derives from a
            # topology file, so the guest stays stopped until the next apply
            ctx.log(f"VM {r.key} was stopped and stays stopped: `vnet apply` the topology to start it again")
            return
        qemu.create(ctx.nss, ctx.state, r)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        qemu.delete(ctx.nss, ctx.state, r)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        process.kill_named(str(qemuargs.files(ctx.state, r.key)["pid"]))


def stopped(state, vm_name: str) -> bool:
    """Whether `vnet vm stop` stopped this VM (and `vnet vm start` has not started it since)."""
    try:
        return qemuargs.files(state, vm_name)["stopped"].is_file()
    except OSError:
        return False


KINDS = (Vm(),)
