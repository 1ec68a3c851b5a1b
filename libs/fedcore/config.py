"""Typed service configuration from a YAML file, every key overridable by environment.

``FEDSUITE_<KEY>`` overrides a top-level key and ``__`` descends into mappings, so
``FEDSUITE_TLS__CA=/certs/ca.pem`` sets ``tls.ca`` and
``FEDSUITE_DATASETS__BREAST__PATH=/data/b.csv`` sets ``datasets.breast.path``. Values
are parsed as YAML scalars (``8080`` is an int, ``true`` a bool). Unknown keys and
wrong types are refused with the key's dotted path, before anything starts; every unknown
key of a file is named at once (job files use the same sentence: :func:`unknown_keys_message`).
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


class ListenError(ConfigError):
    """A service cannot listen on a configured address (in use, not on this host, not permitted)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason


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


UnknownKeys = tuple[str, list[str], list[str]]
"""(dotted path of a mapping, "" for the top level; its unknown keys; the keys it takes)."""

_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def unknown_keys_message(found: list[UnknownKeys]) -> str:
    """One sentence naming every unknown key of a document by its dotted path, and what each mapping takes,
    so a file with several typos is fixed in one go instead of one error at a time."""
    keys = [f"{where}.{key}" if where else key for where, unknown, _ in found for key in unknown]
    takes = [f"{where or 'the top level'} takes {', '.join(sorted(known))}" for where, _, known in found]
    return f"unknown key(s): {', '.join(keys)}; {'; '.join(takes)}"


def _find_unknown(kind: Any, value: Any, where: str, found: list[UnknownKeys]) -> None:
    """Collect unknown keys under ``value`` as :func:`_build` would meet them (wrong types are its to report)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            _find_unknown(option, value, where, found)
    elif dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
        hints = typing.get_type_hints(kind)
        unknown = sorted(str(key) for key in value if key not in hints)
        if unknown:
            found.append((where, unknown, list(hints)))
        for key, item in value.items():
            if key in hints:
                _find_unknown(hints[key], item, f"{where}.{key}" if where else str(key), found)
    elif origin is dict and isinstance(value, Mapping):
        for key, item in value.items():
            _find_unknown(typing.get_args(kind)[1], item, f"{where}.{key}", found)
    elif origin in (list, tuple) and isinstance(value, list):
        for i, item in enumerate(value):
            _find_unknown(typing.get_args(kind)[0], item, f"{where}[{i}]", found)


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
        raise ConfigError(f"{where}: expected {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")
    return value


def _build_dataclass(kind: type[T], values: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
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
    found: list[UnknownKeys] = []
    _find_unknown(kind, values, "", found)
    if found:
        raise ConfigError(unknown_keys_message(found))
    return _build_dataclass(kind, values, "")
