"""vnet's declarative model layer (vnet.spec.schema): values as YAML writes them, every problem of
the data in one error, frozen instances that compare by value, copies, and the JSON Schema that
`vnet schema` prints for editors (checked here against every example file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
import yaml

from vnet import spec
from vnet.spec import models
from vnet.spec.models import AllowSpec, ForwardSpec, NetnsSpec, Topology
from vnet.spec.schema import After, Field, Model, ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def errors(cls, data) -> list[tuple]:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    return [(e["type"], e["loc"]) for e in info.value.errors()]


class Small(Model):
    n: int = Field(1, ge=1, le=10)
    on: bool = False
    word: Literal["a", "b"] = "a"
    pair: tuple[str, str] | None = None
    names: list[Annotated[str, After(str.lower)]] = Field(default_factory=list)


@pytest.mark.parametrize("value, want", [(5, 5), ("7", 7), (" 8 ", 8), (3.0, 3), (True, 1)])
def test_an_int_field_takes_numbers_as_yaml_writes_them(value, want):
    assert Small.model_validate({"n": value}).n == want


@pytest.mark.parametrize("value, kind", [(0, "greater_than_equal"), (11, "less_than_equal"), (2.5, "int_from_float"),
                                         ("x", "int_parsing"), ("1" * 5000, "int_parsing_size"), ([1], "int_type")])
def test_an_int_field_refuses_what_is_no_whole_number_in_range(value, kind):
    assert errors(Small, {"n": value}) == [(kind, ("n",))]


@pytest.mark.parametrize("value, want", [(True, True), ("yes", True), ("off", False), (1, True), (0, False)])
def test_a_bool_field_takes_yaml_booleans(value, want):
    assert Small.model_validate({"on": value}).on is want


def test_every_problem_is_reported_field_errors_first_then_unknown_keys():
    assert errors(Small, {"colour": 1, "n": 0, "word": "c", "pair": ["x"], "names": ["A", 2]}) == [
        ("greater_than_equal", ("n",)), ("literal_error", ("word",)), ("missing", ("pair", 1)),
        ("string_type", ("names", 1)), ("extra_forbidden", ("colour",)),
    ]


def test_checks_after_the_type_normalise_and_defaults_are_fresh():
    a, b = Small.model_validate({"names": ["X"]}), Small.model_validate({})
    assert a.names == ["x"] and b.names == [] and b.names is not Small.model_validate({}).names


def test_instances_are_frozen_compare_and_hash_by_value_and_copy_with_changes():
    f = ForwardSpec.model_validate({"port": 80, "to": "web"})
    assert f == ForwardSpec.model_validate({"port": "80", "to": "web"}) and len({f, ForwardSpec(port=80, to="web")}) == 1
    with pytest.raises(AttributeError):
        f.port = 81  # type: ignore[misc]
    g = f.model_copy(update={"port": 81})
    assert (g.port, g.to, f.port) == (81, "web", 80) and g != f


def test_an_alias_and_its_field_name():
    assert AllowSpec.model_validate({"from": "a", "to": "b"}).from_ == "a"
    assert AllowSpec.model_validate({"from_": "a", "to": "b"}).from_ == "a"
    assert errors(AllowSpec, {"from": "a", "from_": "x", "to": "b"}) == [("extra_forbidden", ("from_",))]


def test_the_endpoint_kind_picks_the_model_and_labels_the_location():
    t = Topology.model_validate({"name": "t", "endpoints": {"c": {"kind": "netns", "network": "n", "address": "dhcp"}}})
    assert isinstance(t.endpoints["c"], NetnsSpec) and t.endpoints["c"].dhcp is True and t.endpoints["c"].address is None
    assert errors(Topology, {"name": "t", "endpoints": {"c": {"kind": "netns"}, "d": {"kind": "x"}, "e": {}, "f": 1}}) == [
        ("missing", ("endpoints", "c", "netns", "network")), ("union_tag_invalid", ("endpoints", "d")),
        ("union_tag_not_found", ("endpoints", "e")), ("model_attributes_type", ("endpoints", "f")),
    ]


def test_constructing_a_model_checks_its_fields():
    assert NetnsSpec(kind="netns", network="lab").ifname == "eth0"
    with pytest.raises(ValidationError):
        NetnsSpec(kind="netns", network="Bad Name")


# --- the JSON Schema: valid against what vnet accepts ----------------------------------------------


def conforms(value, schema: dict, root: dict, path: str = "$") -> list[str]:
    """A small JSON Schema (2020-12) checker for the keywords the topology schema uses."""
    if "$ref" in schema:
        return conforms(value, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root, path)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            fits = [not conforms(value, s, root, path) for s in schema[key]]
            ok = any(fits) if key == "anyOf" else sum(fits) == 1
            return [] if ok else [f"{path}: {value!r} fits {'none' if not any(fits) else 'more than one'} of {key}"]
    kinds = {"string": str, "integer": int, "boolean": bool, "null": type(None), "array": list, "object": dict}
    if "type" in schema:
        want = kinds[schema["type"]]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            return [f"{path}: {value!r} is not {schema['type']}"]
    if "const" in schema and value != schema["const"] or "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not allowed"]
    if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
        return [f"{path}: {value!r} is out of range"]
    out = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{path}: {k} is required" for k in schema.get("required", ()) if k not in value]
        for k, v in value.items():
            if k in props:
                out += conforms(v, props[k], root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}.{k}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += conforms(v, schema["additionalProperties"], root, f"{path}.{k}")
    if isinstance(value, list):
        if "prefixItems" in schema and not schema["minItems"] <= len(value) <= schema["maxItems"]:
            out.append(f"{path}: {len(value)} items")
        for i, v in enumerate(value):
            item = schema["prefixItems"][i] if "prefixItems" in schema and i < len(schema["prefixItems"]) else schema.get("items")
            out += conforms(v, item, root, f"{path}[{i}]") if item else []
    return out


def test_every_example_conforms_to_the_schema():
    schema = spec.json_schema()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        assert conforms(yaml.safe_load(path.read_text()), schema, schema) == [], path.name


def test_the_schema_refuses_what_validation_refuses():
    schema = spec.json_schema()
    for bad in ({"name": "t", "colour": 1}, {"networks": {}}, {"name": "t", "endpoints": {"x": {"kind": "tapp"}}},
                {"name": "t", "networks": {"a": {"mode": "nat", "mtu": 10}}}, {"name": "t", "allow": [{"from_": "a", "to": "b"}]}):
        assert conforms(bad, schema, schema), bad


def test_the_schema_declares_every_field_with_its_description():
    schema = spec.json_schema()
    declared = {name: cls for name, cls in vars(models).items() if isinstance(cls, type) and issubclass(cls, Model)
                and cls.__module__ == models.__name__ and name not in ("Strict", "PortPolicy", "Topology")}
    assert set(schema["$defs"]) == set(declared)
    for name, cls in declared.items():
        props = schema["$defs"][name]["properties"]
        assert list(props) == [info.alias or f for f, info in cls.model_fields.items()]
        for f, info in cls.model_fields.items():
            assert props[info.alias or f].get("description") == info.description, (name, f)
    assert schema["properties"]["endpoints"]["additionalProperties"]["discriminator"]["propertyName"] == "kind"
    assert {"type": "boolean"} in schema["$defs"]["NetworkSpec"]["properties"]["dhcp"]["anyOf"]  # `dhcp: true`


def test_vnet_schema_prints_it_as_json():
    proc = subprocess.run([sys.executable, "-c", "from vnet.cli import main; main()", "schema"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(spec.json_schema()))
