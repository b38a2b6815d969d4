"""The topology file: typed models, loading and validation, JSON Schema."""

from vnet.spec.models import NetnsSpec, NetworkSpec, TapSpec, Topology, TunSpec
from vnet.spec.validate import addressing, load, load_text

__all__ = ["NetnsSpec", "NetworkSpec", "TapSpec", "Topology", "TunSpec", "addressing", "load", "load_text", "json_schema", "summary"]

HOST_CHECKS_NOTE = "checks against the host (uplinks exist, names and subnets are free) run at `vnet plan`"


def summary(path: object, topo: Topology) -> str:
    """What `vnet validate` says of a valid file, and what it did not check."""
    counts = f"{len(topo.networks)} networks, {len(topo.endpoints)} endpoints, {len(topo.vms)} VMs"
    return f"{path}: valid ({counts}); this checked the file only — {HOST_CHECKS_NOTE}"


def json_schema() -> dict:
    """JSON Schema of the topology file, for editors' completion and checks."""
    return Topology.model_json_schema()
