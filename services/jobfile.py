"""Job files (YAML) -> ``JobSpec`` messages.

Enum values may be written the short way (``type: logistic_regression``,
``penalty: l2``) or as their full proto names. The file is checked against the JobSpec
descriptor before protobuf sees it, so a mistake reads as the service configs' do: every
unknown key at once, by dotted path, with what each mapping takes; then a wrong type as
``horizontal.rounds: expected an integer, got 'ten'``. A numeric YAML value is accepted
for a string field (``model_version: 20260205`` is the version "20260205"). A Duration field
is written in seconds under its name plus ``_s`` (``round_timeout_s: 120`` sets
``round_timeout``), or under its own name as a number of seconds or protobuf's ``"120s"``.
Enums take FATE's spellings too (``optimizer: nesterov_momentum_sgd``, ``penalty: L2``). A
FATE job configuration is recognised and translated (:mod:`fedsuite.fate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from fedcore.config import UnknownKeys, unknown_keys_message
from fedcore.proto import coordinator_pb2 as pb

from fedsuite import fate


class JobFileError(ValueError):
    """The job file cannot be read or does not describe a job."""


_INTEGERS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_DURATION = "google.protobuf.Duration"
SECONDS_SUFFIX = "_s"
"""A Duration field ``round_timeout`` is written ``round_timeout_s: <seconds>`` in job files."""


def _field(descriptor: Descriptor, key: object) -> FieldDescriptor | None:
    """The field ``key`` names: its own name, or a Duration field's name plus ``_s``."""
    f = descriptor.fields_by_name.get(str(key))
    if f is None and str(key).endswith(SECONDS_SUFFIX):
        f = descriptor.fields_by_name.get(str(key).removesuffix(SECONDS_SUFFIX))
        return f if f is not None and _is_duration(f) else None
    return f


def _is_duration(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.full_name == _DURATION


def _keys(descriptor: Descriptor) -> list[str]:
    """The keys a mapping of ``descriptor`` takes, Duration fields under their ``_s`` spelling."""
    return [f.name + SECONDS_SUFFIX if _is_duration(f) else f.name for f in descriptor.fields]


def _is_map(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def _is_repeated(f: FieldDescriptor) -> bool:
    return f.is_repeated and not _is_map(f)


def _path(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _find_unknown(values: Any, descriptor: Descriptor, where: str, found: list[UnknownKeys]) -> None:
    """Every unknown key under ``values``, depth first (wrong types are :func:`_convert`'s to report)."""
    if not isinstance(values, Mapping):
        return
    unknown = sorted(str(key) for key in values if _field(descriptor, key) is None)
    if unknown:
        found.append((where, unknown, _keys(descriptor)))
    for key, value in values.items():
        f = _field(descriptor, key)
        if f is None or f.type != FieldDescriptor.TYPE_MESSAGE or _is_duration(f):
            continue
        if _is_map(f):
            value_field = f.message_type.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(value, Mapping):
                for k, item in value.items():
                    _find_unknown(item, value_field.message_type, _path(_path(where, key), k), found)
        elif _is_repeated(f) and isinstance(value, list):
            for i, item in enumerate(value):
                _find_unknown(item, f.message_type, f"{_path(where, key)}[{i}]", found)
        else:
            _find_unknown(value, f.message_type, _path(where, key), found)


def _convert_message(values: Any, descriptor: Descriptor, where: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise JobFileError(f"{where or 'job'}: expected a mapping")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:  # `key:` with nothing after it in YAML: unset
            continue
        f = _field(descriptor, key)
        assert f is not None  # _find_unknown reported unknown keys first
        path = _path(where, key)
        if f.name in converted:
            raise JobFileError(f"{path}: set {f.name} once (as {f.name}{SECONDS_SUFFIX} or {f.name}, not both)")
        if _is_duration(f):
            converted[f.name] = _seconds(value, path)
        elif _is_map(f):
            if not isinstance(value, Mapping):
                raise JobFileError(f"{path}: expected a mapping, got {value!r}")
            value_field = f.message_type.fields_by_name["value"]
            converted[f.name] = {str(k): _convert(v, value_field, _path(path, k)) for k, v in value.items()}
        elif _is_repeated(f):
            if not isinstance(value, list):
                raise JobFileError(f"{path}: expected a list, got {value!r}")
            converted[f.name] = [_convert(v, f, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            converted[f.name] = _convert(value, f, path)
    for oneof in descriptor.oneofs:
        chosen = [f.name for f in oneof.fields if f.name in converted]
        if len(chosen) > 1:
            raise JobFileError(f"{where or 'job'}: set only one of {', '.join(f.name for f in oneof.fields)} "
                               f"(got {', '.join(chosen)})")
    return converted


def _convert(value: Any, f: FieldDescriptor, path: str) -> Any:
    """One value of field ``f``, in the form json_format takes, or JobFileError naming ``path`` and the type."""
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return _convert_message(value, f.message_type, path)
    if f.type == FieldDescriptor.TYPE_ENUM:
        return _enum(value, f, path)
    if f.type in _INTEGERS:
        low, high = _INTEGERS[f.type]
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobFileError(f"{path}: expected an integer, got {value!r}")
        if not low <= value <= high:
            raise JobFileError(f"{path}: expected an integer in {low}..{high}, got {value}")
        return value
    if f.type in _FLOATS:
        if isinstance(value, str):
            value = _float_text(value, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JobFileError(f"{path}: expected a number, got {value!r}")
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"  # as json_format spells them
    if f.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise JobFileError(f"{path}: expected true or false, got {value!r}")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # a version or name YAML read as a number
    if not isinstance(value, str):
        raise JobFileError(f"{path}: expected a string, got {value!r}")
    return value


def _seconds(value: Any, path: str) -> str:
    """A duration in seconds (a number, or protobuf's JSON text "1.5s") as protobuf's JSON text."""
    if isinstance(value, str) and value.endswith("s"):
        value = _float_text(value[:-1], path)
    elif isinstance(value, str):
        value = _float_text(value, path)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JobFileError(f"{path}: expected a number of seconds, got {value!r}")
    return f"{value:.9f}s"


def _float_text(text: str, path: str) -> float:
    """A number YAML left as text: NaN/Infinity, or an exponent without a dot (YAML 1.1 reads 1e-05 as a string)."""
    try:
        return float(text.lower().replace("infinity", "inf"))
    except ValueError:
        raise JobFileError(f"{path}: expected a number, got {text!r}") from None


def _enum(value: Any, f: FieldDescriptor, path: str) -> Any:
    prefix = f.enum_type.values[0].name.removesuffix("UNSPECIFIED")
    choices = ", ".join(v.name.removeprefix(prefix).lower() for v in f.enum_type.values[1:])
    if isinstance(value, int) and not isinstance(value, bool) and value in f.enum_type.values_by_number:
        return value
    if not isinstance(value, str):
        raise JobFileError(f"{path}: expected one of {choices}, got {value!r}")
    name = value.upper()
    full = name if name.startswith(prefix) else prefix + name
    if full not in f.enum_type.values_by_name:
        raise JobFileError(f"{path}: unknown value {name.lower()!r}; choose one of {choices}")
    return full


def parse_job_spec(values: Any) -> pb.JobSpec:
    """A JobSpec from already-parsed YAML/JSON values in fedsuite's own shape."""
    found: list[UnknownKeys] = []
    _find_unknown(values, pb.JobSpec.DESCRIPTOR, "", found)
    if found:
        raise JobFileError(unknown_keys_message(found))
    converted = _convert_message(values, pb.JobSpec.DESCRIPTOR, "")
    try:
        return json_format.ParseDict(converted, pb.JobSpec())
    except json_format.ParseError as err:  # what the walk above does not foresee still gets a sentence
        raise JobFileError(str(err)) from err


@dataclass(frozen=True)
class LoadedJob:
    """A job file's spec; for a FATE conf also the fedsuite job it became and what to tell its author."""

    spec: pb.JobSpec
    translated: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def load_job(path: str | Path, fate_parties: Mapping[str, str] | None = None) -> LoadedJob:
    """Read a job file: fedsuite's YAML, or a FATE job configuration (JSON or YAML) to translate.

    ``fate_parties`` maps FATE party ids to fedsuite party ids (the CLI's ``--party 9999=bank``),
    over any ``fedsuite.parties`` block in the FATE conf itself.
    """
    try:
        text = Path(path).read_text()
        values = _json(text) if text.lstrip().startswith("{") else None
        values = yaml.safe_load(text) if values is None else values
    except FileNotFoundError as err:
        raise JobFileError(f"job file not found: {path}") from err
    except yaml.YAMLError as err:
        raise JobFileError(f"{path}: not valid YAML: {err}") from err
    if not fate.is_fate_conf(values):
        return LoadedJob(parse_job_spec(values))
    try:
        translation = fate.translate(values, fate_parties or {})
    except fate.FateConfError as err:
        raise JobFileError(f"{path}: {err}") from err
    return LoadedJob(parse_job_spec(translation.job), translation.job, translation.notes)


def _json(text: str) -> Any:
    """JSON as JSON (FATE confs are JSON, and YAML 1.1 would read their 1e-05 as a string); None if it is not."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def load_job_spec(path: str | Path) -> pb.JobSpec:
    """Read a job file (a FATE conf must then map its party ids itself, in its ``fedsuite`` block)."""
    return load_job(path).spec
