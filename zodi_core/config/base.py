"""The base of every config: the frozen model class, the shared field types, one line per
invalid field (:class:`ConfigError`), deep merge and the config digest."""

from __future__ import annotations

import contextvars
import difflib
import hashlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

T = TypeVar("T")


def expect(ok: Callable[[Any], Any], expected: str, received: Callable[[Any], str] = repr):
    """A field check whose error reads ``expected <expected>, received <value>``."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"expected {expected}, received {received(value)}")
        return value

    return AfterValidator(check)


#: A path, hub id, config name or URL: a string that is not empty or blank.
NonEmptyStr = Annotated[str, expect(str.strip, "a non-empty value")]
#: A torch device of a stage (zodi_core.device.resolve_device): 'auto', 'cpu', 'cuda', 'cuda:N'.
Device = Annotated[
    str, expect(re.compile(r"auto|cpu|cuda(:\d+)?").fullmatch, "'auto', 'cpu', 'cuda' or 'cuda:N'")
]
#: A list with at least one item (checked after its items, so a bad item is named alone).
NonEmptyTuple = Annotated[tuple[T, ...], expect(bool, "at least one item", lambda _: "none")]
#: Precision of a stage's weights and activations (each field says what 'auto' means).
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
#: A seed that numpy and mmengine accept (``np.random.seed`` takes 0 <= seed < 2**32).
Seed32 = Annotated[int, Field(ge=0, lt=2**32)]
#: A name that becomes a file or folder name (a manifest name, a split folder).
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names field, expectation and value.

    ``problems`` holds one line per problem (``train.max_iters: expected a value >= 1,
    received -5``): validation lists every bad field at once, not the first only.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]


#: pydantic's error types → what the field expects (its ``ctx`` fills the braces).
_EXPECTED = {
    "greater_than": "a value > {gt}",
    "greater_than_equal": "a value >= {ge}",
    "less_than": "a value < {lt}",
    "less_than_equal": "a value <= {le}",
    "string_pattern_mismatch": "a value matching {pattern}",
    "literal_error": "one of {expected}",
    "multiple_of": "a multiple of {multiple_of}",
    "finite_number": "a finite number",
    "string_type": "a string",
    "tuple_type": "a list",
    **dict.fromkeys(("int_parsing", "int_type", "int_from_float"), "an integer"),
    **dict.fromkeys(("float_parsing", "float_type"), "a number"),
    **dict.fromkeys(("bool_parsing", "bool_type"), "true or false"),
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"), "a mapping"),
}


def _fields_at(node: Any, loc: tuple) -> list[str]:
    """The field names of the config model at ``loc`` under ``node`` (a model, or a type holding
    one: Optional, tuple, dict, Annotated), for "did you mean"; [] if unknown."""
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return next(filter(None, (_fields_at(arg, loc) for arg in get_args(node))), [])
    if len(loc) == 1:
        return list(node.model_fields)
    field = node.model_fields.get(str(loc[0]))  # None: a dict key or list index, same model
    return _fields_at(field.annotation if field else node, loc[1:])


def _problem_line(prefix: str, model: type[BaseModel], e: Any) -> str:
    loc = tuple(p for p in e["loc"] if not str(p).startswith("function-"))
    received = e.get("input")
    kind = e["type"]
    if loc[-1:] == ("[key]",):  # a mapping's key is invalid: name the mapping
        loc = loc[:-2]
    field = prefix + (".".join(str(p) for p in loc) or "<root>")
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(model, loc), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "check the spelling"
        return f"{field}: unknown key (received {received!r}); {hint}"
    if kind == "missing":
        return f"{field}: required, not set"
    if kind == "value_error":
        message = str(e["msg"]).removeprefix("Value error, ")
        if re.match(r"[a-z_][\w.]*: ", message):  # names its own field (a cross-field check)
            return f"{prefix}{message}" if loc == () else f"{field}.{message}"
        if "received" not in message and not isinstance(received, dict):
            message += f"; received {received!r}"
        return f"{field}: {message}"
    expected = _EXPECTED.get(kind)
    if expected is None:
        return f"{field}: {e['msg']} (received {received!r})"
    ctx = {  # a whole bound reads as written (1, not 1.0)
        k: int(v) if isinstance(v, float) and v.is_integer() else v
        for k, v in e.get("ctx", {}).items()
    }
    return f"{field}: expected {expected.format(**ctx)}, received {received!r}"


#: The names of every config's presets.
PRESET_NAMES = ("paper", "default", "demo")
_NESTING: contextvars.ContextVar[int] = contextvars.ContextVar("zodi_config_nesting", default=0)


class _Config(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    def __init__(self, **data: Any) -> None:
        # Nested models are validated inside the outer one: only the outermost call converts
        # pydantic's error into one ConfigError, so nested fields read "Outer.inner.field".
        token = _NESTING.set(_NESTING.get() + 1)
        try:
            super().__init__(**data)
        except ValidationError as err:
            if _NESTING.get() > 1:
                raise
            # One line per problem; a pipeline config's fields read as its YAML keys
            # (train.max_iters), another model's with its class name (TransferConfig.strength).
            name = type(self).__name__
            prefix = "" if name == "PipelineConfig" else f"{name}."
            problems = [_problem_line(prefix, type(self), e) for e in err.errors()]
            n = len(problems)
            head = "invalid configuration:" if n == 1 else f"invalid configuration ({n} problems):"
            raise ConfigError(head + "\n  " + "\n  ".join(problems), problems) from None
        finally:
            _NESTING.reset(token)

    def replace(self, **overrides: Any) -> Self:
        """A copy with ``overrides`` applied and validated again."""
        return type(self)(**{**self.model_dump(), **overrides})

    #: The values of the presets that differ from the defaults (see :data:`PRESET_NAMES`).
    _presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> Self:
        """The named preset (``paper``, ``default``, ``demo``) with ``overrides`` applied."""
        if name not in PRESET_NAMES:
            raise ConfigError(
                f"{cls.__name__}.preset: expected one of {sorted(PRESET_NAMES)}, received {name!r}"
            )
        # A field holding a config starts from that config's preset of the same name.
        nested = {
            field: preset
            for field, info in cls.model_fields.items()
            if (preset := getattr(info.annotation, "_presets", {}).get(name))
        }
        return cls(**_deep_merge(nested | cls._presets.get(name, {}), overrides))


def read_yaml_mapping(text: str, where: str, expected: str = "a mapping") -> dict[str, Any]:
    """The mapping a YAML (or JSON) document holds; else a ConfigError naming ``where``."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected {expected}, received {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():  # a config given whole replaces the preset's values
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_digest(config: BaseModel | dict[str, Any], length: int = 16) -> str:
    """Stable hex digest of an effective config (canonical JSON, sorted keys)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
