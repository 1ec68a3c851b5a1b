"""fedcore.logrelay: stderr lines, gRPC's own included, become JSON log lines tagged with service and node."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from fedcore.logrelay import SERVING, Relay, service_environment

SERVER_REFUSES = [  # what gRPC 1.85 writes, with GRPC_TRACE=handshaker, when a client presents a foreign certificate
    "I1204 01:12:51.783536   23674 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
    "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
    "I1204 01:12:51.783569   23674 handshaker.cc:155] CallNextHandshakerLocked: error=UNKNOWN: Ssl handshake failed "
    "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
    "unable to get local issuer certificate: OK",
    "=== Source Location Trace: === ",
    "src/core/util/status_helper.cc:68",
    " shutdown=false index=2, args={endpoint=0x7f0d30002810, args={grpc.http2.bdp_probe=0, "
    "grpc.internal.endpoint_local_address=ipv4:127.0.0.1:45391, grpc.internal.endpoint_peer_address=ipv4:127.0.0.1:43324,"
    " grpc.internal.server_credentials=0x55ee38248500, grpc.so_reuseport=0}, read_buffer.Length()=0, exit_early=0}",
    "I1204 01:12:51.783578   23674 channel_trace.h:396] handshake manager 0x7fe314002c50: Failed with error: UNKNOWN: "
    "Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
    "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK",
    "=== Source Location Trace: === ",
    "src/core/util/status_helper.cc:68",
    "",
]
CONNECT_REFUSED = [  # a party dialling a coordinator that is down: not TLS, Python logs it already
    "I1204 01:13:04.482358   24082 handshaker.cc:155] CallNextHandshakerLocked: error=UNKNOWN: Failed to connect to "
    "remote host: Connection refused",
    "=== Source Location Trace: === ",
    "src/core/lib/event_engine/posix_engine/posix_engine.cc:309",
    " shutdown=false index=1, args={grpc.server_uri=dns:///127.0.0.1:1}, read_buffer.Length()=0, exit_early=0}",
]
ROUTINE = "I1204 01:12:51.774681   23665 handshaker.cc:155] CallNextHandshakerLocked: error=OK shutdown=false index=0"


def relay(lines: list[str], level: str = "info", up: bool = True) -> list[str]:
    written: list[str] = []
    relayed = Relay("coordinator", "coordinator", level, written.append)
    for line in [SERVING, *lines] if up else lines:
        relayed.line(line)
    relayed.close()
    return written


def parsed(lines: list[str], **kwargs: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in relay(lines, **kwargs)]


def test_a_failed_handshake_is_one_json_line_with_the_peer() -> None:
    (record,) = parsed([ROUTINE, *SERVER_REFUSES, *CONNECT_REFUSED])
    assert record.pop("timestamp").endswith("Z")
    assert record == {
        "event": "tls_handshake_failed", "level": "warning", "service": "coordinator", "node_id": "coordinator",
        "side": "server", "peer": "127.0.0.1:43324", "local": "127.0.0.1:45391",
        "reason": "UNKNOWN: Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
                  "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
        "hint": "the client's certificate is not signed by this node's CA (tls.ca)",
    }


def test_json_lines_pass_unchanged_and_other_text_is_wrapped_in_order() -> None:
    event = '{"event": "serving", "level": "info", "node_id": "coordinator", "service": "coordinator"}'
    traceback = ["Exception in thread heartbeat:", "Traceback (most recent call last):", '  File "x.py", line 1',
                 "ValueError: boom"]
    grpc_line = "E1204 01:11:13.842416   17334 ssl_transport_security.cc:3238] No match found for server name: x"
    written = relay([event, *traceback, grpc_line, event])
    assert written[0] == event and written[3] == event
    wrapped, core = json.loads(written[1]), json.loads(written[2])
    assert wrapped["event"] == "stderr" and wrapped["level"] == "error" and wrapped["message"] == "\n".join(traceback)
    assert core["event"] == "grpc" and core["level"] == "error" and core["source"] == "ssl_transport_security.cc"
    assert core["message"] == "No match found for server name: x" and core["node_id"] == "coordinator"


def test_records_below_the_services_level_are_dropped() -> None:
    closed = [line.replace("error=UNKNOWN: Ssl handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:"
                           "SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
                           "certificate: OK", "error=UNAVAILABLE: Handshake read failed (Socket closed)")
              for line in SERVER_REFUSES[1:5]]
    assert [r["level"] for r in parsed(closed)] == ["info"]  # a TCP probe, or a client that refused us
    assert parsed(closed, level="warning") == []
    assert len(parsed(SERVER_REFUSES, level="warning")) == 1


def test_a_service_that_fails_at_start_prints_its_sentence_as_written() -> None:
    startup = ["I1204 01:22:56.782770   1 trace.cc:91] gRPC Tracers: handshaker",
               "E1204 01:22:56.782770   1 add_port.cc:81] Failed to add port to server: No address added",
               "fedsuite: cannot listen on 127.0.0.1:50051 (`listen` in c.yaml): address already in use"]
    assert relay(startup, up=False) == startup[1:]  # only our own trace's banner is left out


def test_the_relay_process_reads_to_the_end_of_its_input() -> None:
    done = subprocess.run([sys.executable, "-m", "fedcore.logrelay", "party", "party-a", "info"],
                          input="\n".join([SERVING, *SERVER_REFUSES, "plain words"]), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["event"], r["node_id"], r["service"]) for r in lines] == [
        ("tls_handshake_failed", "party-a", "party"), ("stderr", "party-a", "party")]


def test_service_environment_adds_the_handshaker_trace_once() -> None:
    assert service_environment({})["GRPC_TRACE"] == "handshaker"
    assert service_environment({"GRPC_TRACE": "tcp"})["GRPC_TRACE"] == "tcp,handshaker"
    assert service_environment({"GRPC_TRACE": "handshaker,api", "X": "1"}) == {"GRPC_TRACE": "handshaker,api", "X": "1"}


def test_a_slow_start_is_not_held_back_for_ever() -> None:
    written: list[str] = []
    relayed = Relay("party", "party-a", "info", written.append, hold_s=0.0)
    relayed.line("still loading a large dataset")
    relayed.tick()
    assert [json.loads(line)["message"] for line in written] == ["still loading a large dataset"]
