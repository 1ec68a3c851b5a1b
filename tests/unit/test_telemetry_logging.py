"""fedcore.telemetry.configure_logging: every line is JSON with service and node_id, whoever writes it."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import logging, threading, warnings
from fedcore import telemetry
telemetry.configure_logging("party", "party-a", "info")
log = telemetry.get_logger()  # made before any thread, like the modules' loggers
log.info("main")
thread = threading.Thread(target=lambda: log.info("from_thread", detail=1), name="heartbeat")
thread.start(); thread.join()
logging.getLogger("grpc._server").error("Exception calling application", exc_info=ValueError("boom"))
warnings.warn("deprecated thing")
def crash(): raise RuntimeError("thread died")
thread = threading.Thread(target=crash, name="worker"); thread.start(); thread.join()
"""


def test_threads_stdlib_logging_warnings_and_crashes_are_json_with_service_and_node() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert all(line["service"] == "party" and line["node_id"] == "party-a" for line in lines), lines
    by_event = {line["event"]: line for line in lines}
    assert by_event["from_thread"]["detail"] == 1
    grpc_line = by_event["Exception calling application"]
    assert grpc_line["logger"] == "grpc._server" and grpc_line["level"] == "error"
    assert "ValueError: boom" in grpc_line["exception"]
    assert any("deprecated thing" in line["event"] and line["level"] == "warning" for line in lines)
    crashed = by_event["thread_crashed"]
    assert crashed["thread"] == "worker" and "RuntimeError: thread died" in crashed["exception"]
