"""Typed service configuration from a YAML file, every key overridable by environment.

``FEDSUITE_<KEY>`` overrides a top-level key and ``__`` descends into mappings, so
``FEDSUITE_TLS__CA=/certs/ca.pem`` sets ``tls.ca`` and
``FEDSUITE_DATASETS__BREAST__PATH=/data/b.csv`` sets ``datasets.breast.path``. Values
are parsed as YAML scalars (``8080`` is an int, ``true`` a bool). Unknown keys and
wrong types are refused with the key's dotted path, before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fedcore.tls import TlsFiles

ENV_PREFIX = "FEDSUITE_"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or variable is missing, malformed or of the wrong type."""


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """Paths of the node's mTLS material (PEM)."""

    ca: str
    cert: str
    key: str

    def files(self, base: Path) -> TlsFiles:
        return TlsFiles(base / self.ca, base / self.cert, base / self.key)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """What every service needs: who it is, where it listens, its TLS and metrics."""

    node_id: str
    listen: str = "127.0.0.1:0"
    tls: TlsConfig | None = None
    metrics_listen: str | None = None
    log_level: str = "info"


def env_overrides(environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """Nested dict of the overrides ``environ`` carries.

    Values stay strings here; :func:`_build` parses them as YAML scalars only where the
    field is not a string, so ``0123`` stays ``"0123"`` for a name and ``[::]:50051``
    stays an address. ``FEDSUITE_CONFIG`` and the CLI's ``FEDSUITE_CLI_*`` are not keys.
    """
    nested: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(prefix) or name == f"{prefix}CONFIG" or name.startswith(f"{prefix}CLI_"):
            continue
        path = name[len(prefix):].lower().split("__")
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(path)} mixes a value and a mapping")
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(f"{name}: {'.'.join(path)} mixes a value and a mapping")
        node[path[-1]] = _EnvValue(environ[name])
    return nested


class _EnvValue(str):
    """A raw environment string, parsed as a YAML scalar only when a non-string is expected."""

    def parsed(self) -> Any:
        if self == "":
            return None
        try:
            return yaml.safe_load(self)
        except yaml.YAMLError:
            return str(self)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _build(kind: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to ``kind`` (dataclass, dict[str, X], list, Optional, scalar)."""
    if isinstance(value, _EnvValue):
        value = str(value) if value and (kind is str or kind == (str | None)) else value.parsed()
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _build(inner, value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(value).__name__}")
        return _build_dataclass(kind, value, where)
    if origin is dict:
        _, item = typing.get_args(kind)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        return {str(k): _build(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        (item, *_) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        built = [_build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(built) if origin is tuple else built
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _build_dataclass(kind: type[T], values: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key(s): {', '.join(prefix + u for u in unknown)}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        path = f"{where}.{name}" if where else name
        if name in values:
            kwargs[name] = _build(hints[name], values[name], path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key: {path}")
    return kind(**kwargs)


def load_config(kind: type[T], path: str | Path | None, environ: Mapping[str, str] | None = None) -> T:
    """Read ``path`` (optional: a container may configure by environment only) into ``kind``."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as err:
            raise ConfigError(f"config file not found: {path}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        values = loaded or {}
    values = _merge(values, env_overrides(os.environ if environ is None else environ))
    return _build_dataclass(kind, values, "")
