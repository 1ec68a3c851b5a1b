"""Job files (YAML) -> ``JobSpec`` messages.

Enum values may be written the short way (``type: logistic_regression``,
``penalty: l2``) or as their full proto names. Unknown keys are refused with their name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from fedcore.proto import coordinator_pb2 as pb


class JobFileError(ValueError):
    """The job file cannot be read or does not describe a job."""


def _expand_enums(values: Any, descriptor: Descriptor, where: str) -> Any:
    if not isinstance(values, dict):
        raise JobFileError(f"{where.rstrip('.') or 'job'}: expected a mapping")
    expanded: dict[str, Any] = {}
    for key, value in values.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            known = ", ".join(sorted(descriptor.fields_by_name))
            raise JobFileError(f"unknown key {where}{key!r}; known keys: {known}")
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            value = _expand_enums(value, field.message_type, f"{where}{key}.")
        elif field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
            prefix = field.enum_type.values[0].name.removesuffix("UNSPECIFIED")
            name = value.upper()
            value = name if name.startswith(prefix) else prefix + name
            if value not in field.enum_type.values_by_name:
                choices = ", ".join(v.name.removeprefix(prefix).lower() for v in field.enum_type.values[1:])
                raise JobFileError(f"{where}{key}: unknown value {name.lower()!r}; choose one of {choices}")
        expanded[key] = value
    return expanded


def parse_job_spec(values: Any) -> pb.JobSpec:
    """A JobSpec from already-parsed YAML/JSON values."""
    try:
        return json_format.ParseDict(_expand_enums(values, pb.JobSpec.DESCRIPTOR, ""), pb.JobSpec())
    except json_format.ParseError as err:
        raise JobFileError(str(err)) from err


def load_job_spec(path: str | Path) -> pb.JobSpec:
    """Read a job file."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as err:
        raise JobFileError(f"job file not found: {path}") from err
    except yaml.YAMLError as err:
        raise JobFileError(f"{path}: not valid YAML: {err}") from err
    return parse_job_spec(values)
