"""Health probe for a fedsuite node in a container: ``grpc.health.v1.Health/Check`` over mTLS.

The image's HEALTHCHECK, docker-compose.yml and the Kubernetes probes all run
``python /opt/fedsuite/healthcheck.py``. Exit status 0 when the node answers SERVING
before the deadline, 1 otherwise (the reason on stderr).

It reads the node's own settings, the ones the service reads: the YAML file named by
``--config`` or ``FEDSUITE_CONFIG`` (optional), overridden by ``FEDSUITE_LISTEN`` and
``FEDSUITE_TLS__CA``/``__CERT``/``__KEY``. The server requires a client certificate, so
the probe presents the node's own. It dials 127.0.0.1 (or ::1) on the listen port and
checks the server's certificate for the name ``localhost``, which ``fedsuite certs init``
always includes; certificates from another CA need ``--server-name`` (a name they carry).
No ``tls`` at all means the node runs ``--insecure``, and the probe speaks plaintext.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcore.config import env_overrides

DEFAULT_TIMEOUT_S = 3.0
"""Below the 5 s every probe in docker/ and k8s/ allows, so the probe reports before it is killed."""


def probe_target(environ: Mapping[str, str], config_path: str | None) -> tuple[str, dict[str, Path] | None]:
    """(address to dial, TLS files or None) from the node's config file and environment."""
    values: dict[str, Any] = {}
    base = Path.cwd()
    config_path = config_path or environ.get("FEDSUITE_CONFIG")
    if config_path:
        values = yaml.safe_load(Path(config_path).read_text()) or {}
        base = Path(config_path).resolve().parent
    overrides = env_overrides(environ)
    listen = str(overrides.get("listen") or values.get("listen") or "")
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise ValueError(f"no fixed listen port to probe (listen={listen!r}); set FEDSUITE_LISTEN=0.0.0.0:PORT")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tls = {**(values.get("tls") or {}), **{k: str(v) for k, v in (overrides.get("tls") or {}).items()}}
    if not tls:
        return address, None
    return address, {name: base / tls[name] for name in ("ca", "cert", "key")}


def check(address: str, tls: dict[str, Path] | None, server_name: str, timeout_s: float) -> str:
    """The health status name the node reports (raises grpc.RpcError if it does not answer)."""
    if tls is None:
        channel = grpc.insecure_channel(address)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls["ca"].read_bytes(),
            private_key=tls["key"].read_bytes(),
            certificate_chain=tls["cert"].read_bytes(),
        )
        channel = grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", server_name)])
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the node's YAML config, if it was started with --config")
    parser.add_argument("--server-name", default="localhost", help="name to check the server certificate for")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of the check, seconds")
    args = parser.parse_args(argv)
    try:
        address, tls = probe_target(os.environ if environ is None else environ, args.config)
        status = check(address, tls, args.server_name, args.timeout)
    except grpc.RpcError as err:
        code = err.code().name if isinstance(err, grpc.Call) else "UNKNOWN"  # type: ignore[union-attr]
        details = err.details() if isinstance(err, grpc.Call) else str(err)  # type: ignore[union-attr]
        print(f"unhealthy: {code}: {details}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, yaml.YAMLError) as err:
        print(f"unhealthy: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {address} reports {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
