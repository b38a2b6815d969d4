"""Reading a topology file's YAML into plain data (mappings, lists, text, numbers, booleans, null),
strictly: duplicate keys, keys that are not plain names, aliases, deep nesting and oversized
numbers and files are refused, each as a SpecError naming the line.

Apart from the checks (validate.py) because PyYAML is a tenth of a command's start-up: a command
whose file is unchanged since vnet last read it takes the data kept beside the state (parsed.py)
and never imports this module.
"""

from __future__ import annotations

import re
from typing import Any

from vnet.errors import Problem, SpecError


class _CompiledWhenUsed:
    """A regular expression compiled on its first use."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)

    def __getattr__(self, name: str) -> Any:  # a method of the pattern: compiled now, kept from then on
        value = getattr(re.compile(*self._args), name)
        setattr(self, name, value)
        return value


def _import_yaml() -> Any:
    """PyYAML, its regular expressions compiled when first used rather than as it is imported: the
    pure-Python reader's character check (a class of all of Unicode, ~4 ms, a tenth of `vnet
    validate`) is never used where libyaml reads, and of the resolvers' a file uses a few."""
    compile_ = re.compile
    re.compile = _CompiledWhenUsed  # type: ignore[assignment]
    try:
        import yaml
    finally:
        re.compile = compile_
    return yaml


yaml = _import_yaml()

MAX_FILE_BYTES = 1 << 20


MAX_NESTING = 64  # a topology is a handful of levels deep


_STR_TAG = "tag:yaml.org,2002:str"
MAX_INT_DIGITS = 20  # no number in a topology is longer; Python refuses past 4300 digits


class _NoDuplicateKeys:
    """Rejects duplicate keys and keys that are not plain values, whichever parser runs. Keys are
    taken as written: `yes:` is the name "yes", not True (YAML 1.1 would make it a boolean)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key_node.tag = _STR_TAG  # every key of a topology is a name
            key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "keys must be plain names, not lists or mappings", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]

    def construct_yaml_int(self, node):  # type: ignore[no-untyped-def]
        digits = sum(c.isalnum() for c in node.value)
        if digits > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number of {digits} digits; no value in a topology has more than {MAX_INT_DIGITS}", node.start_mark
            )
        return super().construct_yaml_int(node)  # type: ignore[misc]


class _PyStrictLoader(_NoDuplicateKeys, yaml.SafeLoader):
    """Pure Python, where PyYAML was built without libyaml."""


def _as_written(loader, node):  # type: ignore[no-untyped-def]
    return str(node.value)  # a date-like value is text to vnet (and 2001-13-45 must not crash the parser)


_PyStrictLoader.add_constructor("tag:yaml.org,2002:int", _NoDuplicateKeys.construct_yaml_int)
_PyStrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _as_written)


_CSafeLoader = getattr(yaml, "CSafeLoader", None)
# libyaml where PyYAML has it: a sixth of the time of the pure-Python parser
_Loader = type("_CStrictLoader", (_NoDuplicateKeys, _CSafeLoader), {}) if _CSafeLoader else _PyStrictLoader
if _Loader is not _PyStrictLoader:
    _Loader.add_constructor("tag:yaml.org,2002:int", _NoDuplicateKeys.construct_yaml_int)
    _Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_written)


_FULL = object()  # what _from_events returns for a file only the full loader reads
_DEFAULT_TAGS = (None, "!")


def _from_events(text: str, loader: type) -> Any:
    """The document built straight from the parser's events, with the loader's own resolver and
    constructors for each value: composing a tree of nodes first was two thirds of loading a
    1,000-endpoint file. Refused on the way, before anything is composed (the composer would
    resolve aliases itself, billion laughs, and recurses once per level): aliases and deep nesting;
    and, as the strict loader refuses them, duplicate keys and keys that are lists or mappings.
    A file with what only the full loader reads (explicit tags, merge keys, several documents)
    is still screened to its end, then _FULL is returned."""
    helper = loader("")
    try:
        resolve, constructors, scalar = helper.resolve, helper.yaml_constructors, yaml.ScalarNode
        # a value as written → as constructed: a topology repeats its values (kinds, network names,
        # modes), and what the implicit resolvers make of text is immutable (text, numbers, booleans, null)
        made: dict[tuple[str, tuple[bool, bool]], Any] = {}
        root: list = []
        stack: list[list] = []  # [container, key awaited (a mapping's next scalar is a key), key, is a mapping]
        top: list | None = None  # stack[-1], the container being built
        depth = documents = 0
        full = False  # from here on only screened: the full loader builds it
        Scalar, MappingStart, SequenceStart = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
        MappingEnd, SequenceEnd = yaml.MappingEndEvent, yaml.SequenceEndEvent
        for ev in yaml.parse(text, Loader=loader):
            cls = ev.__class__
            # tested in the order they come most: scalars are two thirds of a topology's events
            if cls is Scalar:
                if full:
                    continue
                if ev.tag not in _DEFAULT_TAGS:
                    full = True
                    continue
                if top is not None and top[1]:  # a key: a name as written (`yes:` is "yes")
                    key = ev.value
                    if key == "<<" and ev.implicit[0]:  # a merge key
                        full = True
                        continue
                    if key in top[0]:  # every earlier key of the mapping holds its value by now
                        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", ev.start_mark)
                    top[1], top[2] = False, key
                    continue
                written = (ev.value, ev.implicit)
                if written in made:
                    value = made[written]
                else:
                    tag = resolve(scalar, ev.value, ev.implicit)
                    # a tag without a constructor (`=` resolves to YAML 1.1's "value") is refused
                    # as the full loader refuses it, by the loader's constructor for unknown tags
                    construct = constructors[tag] if tag in constructors else constructors[None]
                    value = made[written] = construct(helper, scalar(tag, ev.value, ev.start_mark, ev.end_mark, style=ev.style))
            elif cls is MappingStart or cls is SequenceStart:
                depth += 1
                if depth > MAX_NESTING:
                    raise RecursionError
                if full:
                    continue
                if ev.tag not in _DEFAULT_TAGS:
                    full = True
                    continue
                if top is not None and top[1]:
                    raise yaml.constructor.ConstructorError(None, None, "keys must be plain names, not lists or mappings", ev.start_mark)
                is_map = cls is MappingStart
                top = [{} if is_map else [], is_map, None, is_map]
                stack.append(top)
                continue
            elif cls is MappingEnd or cls is SequenceEnd:
                depth -= 1
                if full:
                    continue
                value = stack.pop()[0]
                top = stack[-1] if stack else None
            elif cls is yaml.AliasEvent:
                raise yaml.constructor.ConstructorError(None, None, "YAML aliases (*name) are not allowed in topology files", ev.start_mark)
            elif cls is yaml.DocumentStartEvent:
                documents += 1
                full = full or documents > 1
                continue
            else:  # the stream's start and end, a document's end
                continue
            if top is None:
                root.append(value)
            elif top[3]:  # the value of the key a mapping holds
                top[0][top[2]] = value
                top[1] = True
            else:
                top[0].append(value)
        if full:
            return _FULL
        return root[0] if root else None
    finally:
        helper.dispose()


def parse_yaml(text: str) -> Any:
    if len(text.encode(errors="replace")) > MAX_FILE_BYTES:
        raise SpecError([Problem("", "file is larger than 1 MiB", "a topology file is small; check the path")])
    try:
        data = _from_events(text, _Loader)
        if data is not _FULL:
            return data
        return yaml.load(text, Loader=_Loader)  # noqa: S506 — strict safe loader above, screened by _from_events
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}, column {where.column + 1}: " if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "yaml.org,2002:value" in problem:  # a bare `=`: YAML 1.1 gives it a tag nothing builds
            raise SpecError([Problem("", f"{at}a bare '=' is YAML 1.1's value indicator, not text", "quote it: '='")]) from None
        raise SpecError([Problem("", f"{at}{problem}", "fix the YAML syntax")]) from None
    except RecursionError:
        raise SpecError([Problem("", "nesting is too deep", "a topology is a few levels deep")]) from None
