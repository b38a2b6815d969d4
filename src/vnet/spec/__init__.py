"""The topology file: typed models, loading and validation, JSON Schema."""

from vnet.spec.models import NetnsSpec, NetworkSpec, TapSpec, Topology, TunSpec
from vnet.spec.validate import addressing, load, load_text

__all__ = ["NetnsSpec", "NetworkSpec", "TapSpec", "Topology", "TunSpec", "addressing", "load", "load_text", "json_schema"]


def json_schema() -> dict:
    """JSON Schema of the topology file, for editors' completion and checks."""
    return Topology.model_json_schema()
