"""Typed, frozen records declared by annotations: the little the topology models need of a model
library, small enough to import in a millisecond.

A model is a class of annotated fields (`Model` subclasses, see models.py). What it gives:
- `Cls.model_validate(data)`: a checked instance from parsed YAML, or `ValidationError` listing
  every problem of the data at once, each a dict {type, loc, msg, input, ctx} (the shape
  validate.py translates into the file's terms);
- frozen instances that compare by value (and hash by value where their fields can);
- `x.model_copy(update={...})`, `Cls.model_fields` (name → `FieldInfo`), `Cls.model_json_schema()`.

Annotations understood: str, int, bool, Literal[...] of strings, X | None, X | Y (the first member
the value fits, exact types first), list[X], tuple[X, Y], dict[K, V], a Model class, and
`Annotated[X, Before(f), After(g), Tagged("kind")]`: f sees the raw value before X's check, g the
checked value after it (each returns the value, or raises ValueError with the message), and
Tagged picks the member of a union of models by the value of one key. Input is taken as
leniently as YAML writes it: "42" is a number for an int field, 1/0/"yes" a boolean.
"""

from __future__ import annotations

import math
from types import NoneType, UnionType
from typing import Annotated, Any, Callable, Literal, Union, get_args, get_origin

_REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()
_MISSING: Any = object()


class FieldInfo:
    """One declared field: its name, the key the file writes it as, its type and default."""

    __slots__ = ("name", "alias", "annotation", "default", "default_factory", "description", "ge", "le")

    def __init__(self, default: Any = _REQUIRED, *, default_factory: Callable[[], Any] | None = None, alias: str | None = None,
                 description: str | None = None, ge: int | None = None, le: int | None = None) -> None:
        self.name = ""
        self.annotation: Any = None
        self.default, self.default_factory, self.alias = default, default_factory, alias
        self.description, self.ge, self.le = description, ge, le

    def is_required(self) -> bool:
        return self.default is _REQUIRED and self.default_factory is None

    @property
    def key(self) -> str:
        return self.alias or self.name


def Field(default: Any = _REQUIRED, **kw: Any) -> Any:  # noqa: N802 — reads like the declaration it is
    """A field's default (none: required), default_factory, alias, description, ge, le."""
    return FieldInfo(default, **kw)


class Before:
    """Runs on the raw value before the type's check. `accepts`: what the JSON Schema adds for the
    values it rewrites (e.g. {"type": "boolean"} for a `true` shorthand)."""

    __slots__ = ("fn", "accepts")

    def __init__(self, fn: Callable[[Any], Any], accepts: dict | None = None) -> None:
        self.fn, self.accepts = fn, accepts


class After:
    """Runs on the checked value: returns it (or its normal form), or raises ValueError."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn


class Tagged:
    """A union of models chosen by one key of the mapping (the endpoints' `kind`)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


class ValidationError(ValueError):
    """Every problem of one validation; `.errors()` lists them as dicts."""

    def __init__(self, errors: list[dict], title: str) -> None:
        self._errors, self.title = errors, title
        super().__init__(f"{len(errors)} problem(s) in {title}: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in errors[:5]))

    def errors(self) -> list[dict]:
        return self._errors


class _Fail(Exception):
    """Raised inside validation with the errors of a value; locations are relative to it."""

    __slots__ = ("errors",)

    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors


def _error(kind: str, value: Any, msg: str, ctx: dict | None = None, loc: tuple = ()) -> dict:
    return {"type": kind, "loc": loc, "msg": msg, "input": value, "ctx": ctx}


def _fail(kind: str, value: Any, msg: str, ctx: dict | None = None) -> _Fail:
    return _Fail([_error(kind, value, msg, ctx)])


def _prefixed(errors: list[dict], *parts: Any) -> list[dict]:
    for e in errors:
        e["loc"] = (*parts, *e["loc"])
    return errors


# --- scalar checks: as lenient as YAML is (the rules pydantic's lax mode has) -----------------------

MAX_INT_DIGITS = 4300  # Python's own limit on converting text to int
_TRUE = frozenset(("1", "on", "t", "true", "y", "yes"))
_FALSE = frozenset(("0", "off", "f", "false", "n", "no"))
_DIGITS = frozenset("0123456789")


def _check_str(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise _fail("string_unicode", value, "not valid UTF-8 text") from None
    raise _fail("string_type", value, "should be text")


def _int_text(text: str, value: Any) -> int:
    text = text.strip()
    body = text[1:] if text[:1] in ("+", "-") else text
    whole, dot, frac = body.partition(".")
    if not whole or (dot and (not frac or frac.strip("0"))) or whole[0] == "_" or whole[-1] == "_" or "__" in whole \
            or not _DIGITS.issuperset(whole.replace("_", "")):
        raise _fail("int_parsing", value, "unable to parse text as a whole number")
    if len(whole) > MAX_INT_DIGITS:
        raise _fail("int_parsing_size", value, "the number is too large")
    number = int(whole.replace("_", ""))
    return -number if text[0] == "-" else number


def _check_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is bool:
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail("finite_number", value, "should be a finite number")
        if not value.is_integer():
            raise _fail("int_from_float", value, "should be a whole number, not one with a fractional part")
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return _int_text(value, value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return _int_text(bytes(value).decode(), value)
        except UnicodeDecodeError:
            raise _fail("int_parsing", value, "unable to parse as a whole number") from None
    raise _fail("int_type", value, "should be a whole number")


def _check_bool(value: Any) -> bool:
    kind = type(value)
    if kind is bool:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == 1:
            return True
        if value == 0:
            return False
        raise _fail("bool_parsing", value, "unable to read as true or false")
    if isinstance(value, (str, bytes, bytearray)):
        try:
            word = (value if isinstance(value, str) else bytes(value).decode()).lower()
        except UnicodeDecodeError:
            raise _fail("bool_parsing", value, "unable to read as true or false") from None
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _fail("bool_parsing", value, "unable to read as true or false")
    raise _fail("bool_type", value, "should be true or false")


def _bounded(check: Callable[[Any], int], ge: int | None, le: int | None) -> Callable[[Any], int]:
    def bounded(value: Any) -> int:
        number = check(value)
        if ge is not None and number < ge:
            raise _fail("greater_than_equal", value, f"should be at least {ge}", {"ge": ge})
        if le is not None and number > le:
            raise _fail("less_than_equal", value, f"should be at most {le}", {"le": le})
        return number

    return bounded


def _exact(tp: Any) -> tuple[type, ...]:
    """The Python types a union member takes as they are, tried before any lenient reading."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    tp = get_origin(tp) or tp
    return (tp,) if isinstance(tp, type) else ()


def _quoted(choices: tuple) -> str:
    words = [repr(c) for c in choices]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# --- compiling a declared type into its check ----------------------------------------------------


def _compile(tp: Any, ge: int | None = None, le: int | None = None) -> Callable[[Any], Any]:
    """The check of a declared type: value -> value (normalised), or raises _Fail."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        tag = next((m.key for m in meta if isinstance(m, Tagged)), None)
        inner = _tagged(base, tag) if tag else _compile(base, ge, le)
        befores = tuple(m.fn for m in meta if isinstance(m, Before))
        afters = tuple(m.fn for m in meta if isinstance(m, After))
        return _wrapped(inner, befores, afters) if befores or afters else inner
    if origin in (Union, UnionType):
        members = [m for m in get_args(tp) if m is not NoneType]
        inner = _compile(members[0], ge, le) if len(members) == 1 else _union(members, ge, le)
        if len(members) == len(get_args(tp)):
            return inner

        def nullable(value: Any) -> Any:
            return None if value is None else inner(value)

        return nullable
    if origin is Literal:
        return _literal(get_args(tp))
    if origin is list:
        return _list(_compile(get_args(tp)[0]))
    if origin is tuple:
        return _tuple(tuple(_compile(a) for a in get_args(tp)))
    if origin is dict:
        key_tp, value_tp = get_args(tp)
        return _dict(_compile(key_tp), _compile(value_tp))
    if tp is str:
        return _check_str
    if tp is bool:
        return _check_bool
    if tp is int:
        return _bounded(_check_int, ge, le) if ge is not None or le is not None else _check_int
    if isinstance(tp, type) and issubclass(tp, Model):
        return tp._check
    raise TypeError(f"schema: no check for the type {tp!r}")


def _wrapped(inner: Callable, befores: tuple, afters: tuple) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        raw = value
        try:
            for fn in befores:
                value = fn(value)
        except ValueError as exc:
            raise _fail("value_error", raw, str(exc), {"error": exc}) from None
        value = inner(value)
        try:
            for fn in afters:
                value = fn(value)
        except ValueError as exc:
            raise _fail("value_error", raw, str(exc), {"error": exc}) from None
        return value

    return wrapped


def _literal(choices: tuple) -> Callable[[Any], Any]:
    assert all(type(c) is str for c in choices), "schema: Literal choices are strings"
    allowed = frozenset(choices)
    ctx = {"expected": _quoted(choices)}

    def literal(value: Any) -> Any:
        if type(value) is str and value in allowed:
            return value
        raise _fail("literal_error", value, f"should be {ctx['expected']}", ctx)

    return literal


_SEQUENCES = (list, tuple, set, frozenset)


def _list(item: Callable) -> Callable[[Any], list]:
    def checked_list(value: Any) -> list:
        if not isinstance(value, _SEQUENCES):
            raise _fail("list_type", value, "should be a list")
        out, errors = [], None
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except _Fail as f:
                errors = (errors or []) + _prefixed(f.errors, i)
        if errors:
            raise _Fail(errors)
        return out

    return checked_list


def _tuple(items: tuple[Callable, ...]) -> Callable[[Any], tuple]:
    n = len(items)

    def checked_tuple(value: Any) -> tuple:
        if not isinstance(value, _SEQUENCES):
            raise _fail("tuple_type", value, "should be a list")
        value = list(value)
        if len(value) > n:
            raise _fail("too_long", value, f"should have at most {n} items, not {len(value)}",
                        {"field_type": "Tuple", "max_length": n, "actual_length": len(value)})
        out, errors = [], []
        for i, check in enumerate(items):
            if i >= len(value):
                errors.append(_error("missing", value, "is required", loc=(i,)))
                continue
            try:
                out.append(check(value[i]))
            except _Fail as f:
                errors += _prefixed(f.errors, i)
        if errors:
            raise _Fail(errors)
        return tuple(out)

    return checked_tuple


def _dict(key: Callable, item: Callable) -> Callable[[Any], dict]:
    plain_keys = key is _check_str

    def checked_dict(value: Any) -> dict:
        if type(value) is not dict:
            raise _fail("dict_type", value, "should be a mapping")
        out, errors = {}, None
        for k, v in value.items():
            if not (plain_keys and type(k) is str):
                try:
                    k2 = key(k)
                except _Fail as f:
                    errors = (errors or []) + _prefixed(f.errors, k, "[key]")
                    k2 = _MISSING
            else:
                k2 = k
            try:
                v2 = item(v)
            except _Fail as f:
                errors = (errors or []) + _prefixed(f.errors, k)
                continue
            if k2 is not _MISSING:
                out[k2] = v2
        if errors:
            raise _Fail(errors)
        return out

    return checked_dict


def _label(tp: Any) -> str:
    """How a union member is named in an error's location (after the type, as pydantic names it)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _label(get_args(tp)[0])
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_label(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _union(members: list, ge: int | None, le: int | None) -> Callable[[Any], Any]:
    """The first member that takes the value as it is, else the first that takes it at all."""
    checks = [(_compile(m, ge, le), _exact(m), _label(m)) for m in members]

    def union(value: Any) -> Any:
        kind = type(value)
        for check, exact, _ in checks:
            if kind in exact:
                try:
                    return check(value)
                except _Fail:
                    pass
        errors = []
        for check, _, label in checks:
            try:
                return check(value)
            except _Fail as f:
                errors += _prefixed(f.errors, label)
        raise _Fail(errors)

    return union


def _tagged(union: Any, key: str) -> Callable[[Any], Any]:
    members = [m for m in get_args(union) if m is not NoneType]
    by_tag: dict[str, type[Model]] = {}
    for m in members:
        (tag,) = get_args(m.model_fields[key].annotation)
        by_tag[tag] = m
    expected = ", ".join(repr(t) for t in by_tag)

    def tagged(value: Any) -> Any:
        if type(value) is not dict:
            if isinstance(value, tuple(members)):
                return value
            raise _fail("model_attributes_type", value, "should be a mapping")
        if key not in value:
            raise _fail("union_tag_not_found", value, f"needs `{key}:`", {"discriminator": repr(key)})
        tag = value[key]
        model = by_tag.get(tag) if type(tag) is str else None
        if model is None:
            raise _fail("union_tag_invalid", value, f"{key} {str(tag)!r} is none of {expected}",
                        {"discriminator": repr(key), "tag": str(tag), "expected_tags": expected})
        try:
            return model._check(value)
        except _Fail as f:
            raise _Fail(_prefixed(f.errors, tag)) from None

    return tagged


# --- models -----------------------------------------------------------------------------------------


class Model:
    """A frozen record of declared fields; unknown keys are refused. Class keywords: `before` (a
    check of the whole raw mapping first, returning it rewritten), `populate_by_name` (a field with
    an alias is taken by its Python name too)."""

    model_fields: dict[str, FieldInfo] = {}
    _model_before: Callable[[Any], Any] | None = None
    _by_name: bool = False

    def __init_subclass__(cls, before: Callable[[Any], Any] | None = None, populate_by_name: bool | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        fields = dict(cls.model_fields)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if name.startswith("_") or name == "model_fields":
                continue
            declared = cls.__dict__.get(name, _REQUIRED)
            info = declared if isinstance(declared, FieldInfo) else FieldInfo(declared)
            info.name, info.annotation = name, _resolved(cls, annotation)
            fields[name] = info
            if name in cls.__dict__:
                delattr(cls, name)  # instances carry the value; the default lives in model_fields
        cls.model_fields = fields
        if before is not None:
            cls._model_before = staticmethod(before)
        if populate_by_name is not None:
            cls._by_name = populate_by_name

    @classmethod
    def _compile(cls) -> dict:
        """What checking a mapping needs, made at the first check: key → (position, field, check);
        the values of absent fields (defaults, in declared order); the fields made by factories,
        the required ones, and the Python names taken in place of an alias."""
        by_key, by_name, defaults, factories, required = {}, {}, {}, [], []
        for i, (name, info) in enumerate(cls.model_fields.items()):
            info.annotation = _resolved(cls, info.annotation, strict=True)
            entry = (i, name, _compile(info.annotation, info.ge, info.le))
            by_key[info.key] = entry
            if cls._by_name and info.alias:
                by_name[name] = (entry, info.alias)
            factory = info.default_factory
            if factory is None and isinstance(info.default, (list, dict, set)):
                factory = (lambda d: lambda: type(d)(d))(info.default)  # a fresh copy for each instance
            if factory is not None:
                defaults[name] = _MISSING
                factories.append((name, factory))
            elif info.default is _REQUIRED:
                defaults[name] = _MISSING
                required.append((i, name, info.key))
            else:
                defaults[name] = info.default
        cls._by_alias_name, cls._defaults = by_name, defaults
        cls._factories, cls._required = tuple(factories), tuple(required)
        cls._by_key = by_key  # last: its presence says the rest is there
        return by_key

    @classmethod
    def _check(cls, data: Any) -> Any:
        """Walks the keys the data has (most fields are absent and take their defaults); errors
        are reported in the fields' declared order, unknown keys after them."""
        if type(data) is not dict:
            if isinstance(data, cls):
                return data
            raise _fail("model_type", data, f"should be a mapping ({cls.__name__})", {"class_name": cls.__name__})
        if cls._model_before is not None:
            try:
                data = cls._model_before(data)
            except ValueError as exc:
                raise _fail("value_error", data, str(exc), {"error": exc}) from None
        by_key = cls.__dict__.get("_by_key") or cls._compile()
        values = dict(cls._defaults)
        failed: list[tuple[int, list[dict]]] | None = None
        extra: list[dict] | None = None
        for key, raw in data.items():
            entry = by_key.get(key)
            if entry is None:
                aliased = cls._by_alias_name.get(key) if cls._by_alias_name else None
                if aliased is None or aliased[1] in data:  # by its name only where the alias is absent
                    extra = (extra or []) + [_error("extra_forbidden", raw, "is not a key here", loc=(key,))]
                    continue
                entry = aliased[0]
            i, name, check = entry
            try:
                values[name] = check(raw)
            except _Fail as f:
                failed = (failed or []) + [(i, _prefixed(f.errors, key))]
                values[name] = None
        for name, factory in cls._factories:
            if values[name] is _MISSING:
                values[name] = factory()
        for i, name, key in cls._required:
            if values[name] is _MISSING:
                failed = (failed or []) + [(i, [_error("missing", data, "is required", loc=(key,))])]
        if failed or extra:
            errors = [e for _, errs in sorted(failed or (), key=lambda f: f[0]) for e in errs]
            raise _Fail(errors + (extra or []))
        obj = object.__new__(cls)
        object.__setattr__(obj, "__dict__", values)
        return obj

    # --- the API the rest of vnet uses ---

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        try:
            return cls._check(data)
        except _Fail as f:
            raise ValidationError(f.errors, cls.__name__) from None

    def __init__(self, **data: Any) -> None:
        try:
            checked = type(self)._check(data)
        except _Fail as f:
            raise ValidationError(f.errors, type(self).__name__) from None
        object.__setattr__(self, "__dict__", checked.__dict__)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Any:
        """A shallow copy with `update` set (not checked again, as pydantic's model_copy)."""
        copy = object.__new__(type(self))
        values = dict(self.__dict__)
        if update:
            values.update(update)
        object.__setattr__(copy, "__dict__", values)
        return copy

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: use model_copy(update={{{name!r}: ...}})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.__dict__.values())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __copy__(self) -> Any:
        return self.model_copy()

    def __deepcopy__(self, memo: dict) -> Any:
        import copy

        dup = object.__new__(type(self))
        object.__setattr__(dup, "__dict__", copy.deepcopy(self.__dict__, memo))
        return dup

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.__dict__))

    @classmethod
    def model_json_schema(cls) -> dict:
        """JSON Schema (2020-12) of the declarations: $defs per model, descriptions, defaults."""
        defs: dict[str, dict] = {}
        top = _model_schema(cls, defs)
        if defs:
            top = {"$defs": dict(sorted(defs.items())), **top}
        return top


def _resolved(cls: type, annotation: Any, strict: bool = False) -> Any:
    """An annotation written as text (a module with `from __future__ import annotations`), evaluated
    in the class's module; a name defined only later is resolved at the first check (`strict`)."""
    if not isinstance(annotation, str):
        return annotation
    import sys

    try:
        return eval(annotation, vars(sys.modules[cls.__module__]), dict(vars(cls)))  # noqa: S307 — the module's own source
    except NameError:
        if strict:
            raise
        return annotation


def _rebuild(cls: type[Model], values: dict) -> Model:
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", dict(values))
    return obj


# --- JSON Schema --------------------------------------------------------------------------------------


def _model_schema(cls: type[Model], defs: dict) -> dict:
    props, required = {}, []
    for name, info in cls.model_fields.items():
        schema = _type_schema(info.annotation, defs, info.ge, info.le)
        if not ("$ref" in schema or any("$ref" in s for s in schema.get("anyOf", ()))):
            schema["title"] = info.key.replace("_", " ").title()
        if info.is_required():
            required.append(info.key)
        elif info.default_factory is None:
            schema["default"] = info.default
        if info.description:
            schema["description"] = info.description
        props[info.key] = dict(sorted(schema.items()))
    out: dict[str, Any] = {"additionalProperties": False}
    if cls.__dict__.get("__doc__"):
        out["description"] = " ".join(cls.__doc__.split())  # type: ignore[union-attr]
    out["properties"] = props
    if required:
        out["required"] = required
    out.update(title=cls.__name__, type="object")
    return dict(sorted(out.items()))


def _ref(cls: type[Model], defs: dict) -> dict:
    if cls.__name__ not in defs:
        defs[cls.__name__] = {}  # a placeholder first: a model may refer to itself
        defs[cls.__name__] = _model_schema(cls, defs)
    return {"$ref": f"#/$defs/{cls.__name__}"}


def _type_schema(tp: Any, defs: dict, ge: int | None = None, le: int | None = None) -> dict:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        tag = next((m.key for m in meta if isinstance(m, Tagged)), None)
        if tag:
            members = [m for m in get_args(base) if m is not NoneType]
            mapping = {get_args(m.model_fields[tag].annotation)[0]: f"#/$defs/{m.__name__}" for m in members}
            one_of = [_ref(m, defs) for m in members]
            return {"discriminator": {"mapping": dict(sorted(mapping.items())), "propertyName": tag}, "oneOf": one_of}
        schema = _type_schema(base, defs, ge, le)
        extra = [m.accepts for m in meta if isinstance(m, Before) and m.accepts]
        if extra:
            options = schema["anyOf"] if list(schema) == ["anyOf"] else [schema]
            schema = {"anyOf": [*options, *extra]}
        return schema
    if origin in (Union, UnionType):
        options = []
        for member in get_args(tp):
            s = {"type": "null"} if member is NoneType else _type_schema(member, defs, ge, le)
            options += s["anyOf"] if list(s) == ["anyOf"] else [s]
        return {"anyOf": options}
    if origin is Literal:
        choices = list(get_args(tp))
        return {"const": choices[0], "type": "string"} if len(choices) == 1 else {"enum": choices, "type": "string"}
    if origin is list:
        return {"items": _type_schema(get_args(tp)[0], defs), "type": "array"}
    if origin is tuple:
        items = [_type_schema(a, defs) for a in get_args(tp)]
        return {"maxItems": len(items), "minItems": len(items), "prefixItems": items, "type": "array"}
    if origin is dict:
        return {"additionalProperties": _type_schema(get_args(tp)[1], defs), "type": "object"}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        bounds = {k: v for k, v in (("maximum", le), ("minimum", ge)) if v is not None}
        return {**bounds, "type": "integer"}
    if isinstance(tp, type) and issubclass(tp, Model):
        return _ref(tp, defs)
    raise TypeError(f"schema: no JSON Schema for the type {tp!r}")
