"""Every line a service writes to stderr reaches its log as JSON, gRPC's own lines included.

gRPC's C core writes its log lines straight to file descriptor 2 in glog's text format
(``I1204 01:06:51.939632  7272 ssl_transport_security.cc:2563] Handshake failed ...``),
past Python's logging, and its line for a failed TLS handshake names no peer. So a
service runs with fd 2 a pipe to a relay process (``python -m fedcore.logrelay``): JSON
lines pass through unchanged, any other line becomes one JSON record tagged with the
service and node, and gRPC's handshaker trace (``GRPC_TRACE=handshaker``; grpc reads it
once, when imported) becomes one ``tls_handshake_failed`` record per failed handshake,
with the peer's address. The trace's other lines are dropped. Until the service is up
its lines are held back, so one that fails at start prints its sentence as it wrote it,
for the person starting it.

A process rather than a thread: when the service dies (a C-level abort, SIGKILL) its last
words are still in the pipe, and the relay still writes them out.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

TRACER = "handshaker"
"""The gRPC tracer whose lines carry a failed handshake's peer address."""

RELAY_PID = "FEDCORE_LOG_RELAY_PID"
"""Environment: the pid of the relay fd 2 already leads to (set for the re-executed service; not
FEDSUITE_*, which would be read as a config key)."""

IDLE_S = 0.05
"""A record's continuation lines arrive together; this long without input ends it."""

DRAIN_S = 2.0
"""At exit, how long the service waits for the relay to write out what is still in the pipe."""

SERVING = "--- fedcore.logrelay: the service is up ---"
"""The line :func:`serving` writes: what came before was the service's start."""

HOLD_MAX, HOLD_S = 1000, 15.0
"""Lines held back, and seconds, at most while a service starts: a slow start still shows its log."""

_RANK = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_GLOG_LEVEL = {"I": "info", "W": "warning", "E": "error", "F": "critical"}
_GLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ (?:[^\s\]]*/)?([\w.+-]+):\d+\] ?(.*)$")
_CONTINUATION = re.compile(r"^(?:$|\s|=== |src/)")
"""How gRPC continues a line: its status's source location trace, then indented details."""
_HANDSHAKE_ERROR = re.compile(r"error=(.*?)(?:\n=== Source Location Trace|\s+shutdown=|$)", re.S)
_HINTS = (
    ("CERTIFICATE_VERIFY_FAILED", "server", "the client's certificate is not signed by this node's CA (tls.ca)"),
    ("CERTIFICATE_VERIFY_FAILED", "client", "the server's certificate is not signed by this node's CA (tls.ca)"),
    ("Hostname Verification", "client", "the server's certificate does not name the address dialled"),
    ("WRONG_VERSION_NUMBER", "server", "the client speaks plaintext (runs --insecure?)"),
    ("WRONG_VERSION_NUMBER", "client", "the server speaks plaintext (runs --insecure?)"),
    ("CERTIFICATE_REQUIRED", "server", "the client sent no certificate"),
    ("Socket closed", "server",
     "the client hung up during the handshake (a TCP probe, or it refused this node's certificate)"),
)
"""(words in gRPC's reason, side, what it means) for the failures people meet."""


def service_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with gRPC's handshaker trace on, besides any tracers already asked for."""
    tracers = [name for name in environ.get("GRPC_TRACE", "").split(",") if name]
    return {**environ, "GRPC_TRACE": ",".join([*tracers, *([] if TRACER in tracers else [TRACER])])}


def relay_stderr(service: str, node_id: str, level: str) -> None:
    """Send this process's fd 2 through a relay; call before any gRPC channel or server exists.

    grpc reads ``GRPC_TRACE`` when imported, so a process that imported it without the
    handshaker trace is executed afresh (same pid, same arguments) with it set; the call
    returns in the process that serves. Whoever starts services can set the trace (see
    :func:`service_environment`) and save that second start.
    """
    if RELAY_PID in os.environ:  # the re-executed service: fd 2 already leads to the relay
        _drain_at_exit(int(os.environ[RELAY_PID]))
        return
    sys.stderr.flush()
    relay = subprocess.Popen([sys.executable, "-m", "fedcore.logrelay", service, node_id, level],
                             stdin=subprocess.PIPE, stdout=sys.stderr.fileno())
    assert relay.stdin is not None
    os.dup2(relay.stdin.fileno(), 2)
    relay.stdin.close()
    os.environ[RELAY_PID] = str(relay.pid)
    environ = service_environment(os.environ)
    if "grpc" in sys.modules and os.environ.get("GRPC_TRACE") != environ["GRPC_TRACE"]:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    os.environ.update(environ)
    _drain_at_exit(relay.pid)


def serving() -> None:
    """Tell the relay the service is up: from here on a failure is logged, not told (no-op without a relay)."""
    if RELAY_PID in os.environ:
        print(SERVING, file=sys.stderr, flush=True)


def _drain_at_exit(relay_pid: int) -> None:
    """At exit, end the pipe and wait (bounded) until the relay has written everything out."""

    def drain() -> None:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)  # fd 2 stays valid, the pipe's last writer is gone: the relay reads EOF
        os.close(devnull)
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            try:
                if os.waitpid(relay_pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.01)

    atexit.register(drain)


@dataclass
class _Record:
    """Lines that belong together: a gRPC log line and its continuations, or plain text."""

    level: str
    source: str | None
    lines: list[str]
    """The message: the first line without gRPC's prefix, then the continuations."""
    raw: list[str]
    """The lines as they were written."""

    @property
    def text(self) -> str:
        return "\n".join(self.lines).rstrip()


class Relay:
    """Turns stderr lines into JSON log lines (the relay process's logic, kept apart from its I/O).

    Until the service is up (:func:`serving` writes :data:`SERVING`) lines are held back: a
    service that fails at start gets its output written as it was, sentences for the person
    who started it; one that comes up gets it as JSON, like everything after.
    """

    def __init__(self, service: str, node_id: str, level: str, write: Callable[[str], None],
                 hold_s: float = HOLD_S) -> None:
        self._tags = {"service": service, "node_id": node_id}
        self._threshold = _RANK.get(level.lower(), _RANK["info"])
        self._write = write
        self._pending: _Record | None = None
        self._held: list[str] | None = []
        self._hold_until = time.monotonic() + hold_s
        self._raw = False

    def wait_s(self) -> float | None:
        """How long to wait for input before :meth:`tick` (None: until input comes)."""
        if self._pending is not None:
            return IDLE_S
        return None if self._held is None else max(0.0, self._hold_until - time.monotonic())

    def tick(self) -> None:
        """No input for :meth:`wait_s`: end the record being collected, or stop holding a slow start back."""
        if self._held is not None and time.monotonic() >= self._hold_until:
            self._replay()
        self.flush()

    def line(self, text: str) -> None:
        """Take one line (without its newline)."""
        if self._held is None:
            self._take(text)
        elif text == SERVING or len(self._held) >= HOLD_MAX or time.monotonic() >= self._hold_until:
            self._replay()
            if text != SERVING:
                self._take(text)
        else:
            self._held.append(text)

    def close(self) -> None:
        """At end of input: a service that never came up gets its output as it wrote it."""
        if self._held is not None:
            self._raw = True
            self._replay()
        self.flush()

    def _replay(self) -> None:
        held, self._held = self._held or [], None
        for text in held:
            self._take(text)

    def _take(self, text: str) -> None:
        if text.startswith("{") and text.rstrip().endswith("}"):  # already a JSON log line
            self.flush()
            self._write(text)
            return
        glog = _GLOG.match(text)
        if glog is not None:
            self.flush()
            self._pending = _Record(_GLOG_LEVEL[glog.group(1)], glog.group(2), [glog.group(3)], [text])
        elif self._pending is not None and (self._pending.source is None or _CONTINUATION.match(text)):
            self._pending.lines.append(text)
            self._pending.raw.append(text)
        elif text.strip():
            self.flush()
            self._pending = _Record("error", None, [text], [text])

    def flush(self) -> None:
        """End the record being collected and write it, unless it is trace noise or below the level."""
        record, self._pending = self._pending, None
        event = None if record is None else self._event(record)
        if event is None or record is None:
            return
        if self._raw:
            for text in record.raw:
                self._write(text)
        elif _RANK[event["level"]] >= self._threshold:
            stamp = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
            self._write(json.dumps({**event, **self._tags, "timestamp": stamp}, sort_keys=True))

    def _event(self, record: _Record) -> dict[str, Any] | None:
        text = record.text
        if record.source is None:
            return {"event": "stderr", "level": record.level, "message": text}
        if record.source == "handshaker.cc":
            return _handshake_failure(text)
        noise = ((record.source == "channel_trace.h" and text.startswith("handshake manager"))
                 or (record.source == "ssl_transport_security.cc" and text.startswith("Handshake failed"))
                 or (record.source == "trace.cc" and text.startswith("gRPC Tracers:")))
        if noise:  # the handshaker record right after says the same, with the peer
            return None
        return {"event": "grpc", "level": record.level, "message": text, "source": record.source}


def _handshake_failure(text: str) -> dict[str, Any] | None:
    """The ``tls_handshake_failed`` event in a handshaker trace record; None for its routine lines."""
    error = _HANDSHAKE_ERROR.search(text)
    reason = error.group(1).strip().removesuffix(": OK") if error else "OK"
    if reason == "OK" or "andshake" not in reason:  # progress, or a TCP connect that failed before TLS began
        return None
    side = "server" if "grpc.internal.server_credentials" in text else "client"
    event: dict[str, Any] = {"event": "tls_handshake_failed", "side": side, "reason": reason,
                             "level": "info" if "Socket closed" in reason else "warning"}
    for key, arg in (("peer", "endpoint_peer_address"), ("local", "endpoint_local_address")):
        found = re.search(rf"grpc\.internal\.{arg}=(?:ipv4:|ipv6:)?([^,}}\s]+)", text)
        if found:
            event[key] = unquote(found.group(1))
    hint = next((what for words, where, what in _HINTS if words in reason and where == side), None)
    if hint is not None:
        event["hint"] = hint
    return event


def _write_line(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):  # nowhere to write: keep draining, so the service never blocks
        pass


def main(argv: Sequence[str]) -> int:
    """``python -m fedcore.logrelay SERVICE NODE_ID LEVEL``: relay stdin to stdout until EOF."""
    service, node_id, level = argv
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # a stop is for the service; we go when its pipe closes
    relay = Relay(service, node_id, level, _write_line)
    buffered = b""
    while True:
        ready, _, _ = select.select([0], [], [], relay.wait_s())
        if not ready:
            relay.tick()
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        *lines, buffered = (buffered + chunk).split(b"\n")
        for line in lines:
            relay.line(line.decode("utf-8", "replace"))
    if buffered:
        relay.line(buffered.decode("utf-8", "replace"))
    relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
