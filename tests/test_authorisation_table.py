"""Who may call what is written once, in each RPC's "(callers: ...)" comment in protos/, and the
servers' POLICY tables must say exactly the same: a method, a role or a whole RPC that one
of them adds and the other lacks fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedcore.proto import arbiter_pb2, coordinator_pb2, party_pb2, vertical_pb2
from fedcore.rpc import AuthPolicy

from fedsuite.arbiter.servicer import POLICY as ARBITER
from fedsuite.coordinator.servicer import POLICY as COORDINATOR
from fedsuite.exchange import POLICY as EXCHANGE
from fedsuite.party.servicer import POLICY as PARTY

PROTOS = Path(__file__).resolve().parent.parent / "protos" / "fedsuite" / "v1"
POLICIES: dict[str, AuthPolicy] = {"Arbiter": ARBITER, "Coordinator": COORDINATOR, "Federation": EXCHANGE,
                                   "Party": PARTY}
"""Service name -> the POLICY table of the servicer that serves it."""
PROTO_MODULES = (arbiter_pb2, coordinator_pb2, party_pb2, vertical_pb2)
"""The generated modules whose files define the services."""
ROLES = {"coordinator": "coordinator", "parties": "party", "party": "party", "admins": "admin", "admin": "admin",
         "arbiter": "arbiter"}
"""The words of "(callers: ...)" -> certificate roles."""

_SERVICE = re.compile(r"^service (\w+) \{$")
_RPC = re.compile(r"^rpc (\w+)\(")
_CALLERS = re.compile(r"\(callers: ([^)]*)\)")


def documented_table() -> dict[str, dict[str, frozenset[str]]]:
    """Service -> full method name -> roles, from the comment above each rpc of every proto file."""
    table: dict[str, dict[str, frozenset[str]]] = {}
    for proto in sorted(PROTOS.glob("*.proto")):
        service, comment = "", ""
        for line in (raw.strip() for raw in proto.read_text().splitlines()):
            if match := _SERVICE.match(line):
                service = match.group(1)
                table[service] = {}
            elif line == "}":
                service = ""
            elif line.startswith("//"):
                comment += " " + line[2:].strip()
                continue
            elif service and (match := _RPC.match(line)):
                callers = _CALLERS.search(comment)
                assert callers, f"{proto.name}: rpc {match.group(1)} has no (callers: ...) in its comment"
                words = [w for w in re.split(r",\s*|\s+and\s+", callers.group(1).strip()) if w]
                unknown = [w for w in words if w not in ROLES]
                assert not unknown, f"{proto.name}: rpc {match.group(1)} names unknown callers {unknown}"
                table[service][f"/fedsuite.v1.{service}/{match.group(1)}"] = frozenset(ROLES[w] for w in words)
            comment = ""
    return table


def test_every_service_in_the_protos_has_a_policy_table() -> None:
    assert sorted(documented_table()) == sorted(POLICIES)


@pytest.mark.parametrize("service", sorted(POLICIES))
def test_policy_table_equals_the_proto_comments(service: str) -> None:
    documented = documented_table()[service]
    enforced = {method: frozenset(roles) for method, roles in POLICIES[service].items()}
    assert enforced == documented


@pytest.mark.parametrize("service", sorted(POLICIES))
def test_policy_table_covers_exactly_the_methods_the_service_descriptor_has(service: str) -> None:
    """Independent of the comment parser: the compiled descriptors' methods are the table's keys."""
    methods = next(module.DESCRIPTOR.services_by_name[service].methods for module in PROTO_MODULES
                   if service in module.DESCRIPTOR.services_by_name)
    assert set(POLICIES[service]) == {f"/fedsuite.v1.{service}/{method.name}" for method in methods}


def test_the_parser_reads_multi_line_comments_and_every_rpc() -> None:
    """Guards the test itself: SubmitJob's comment spans three lines, and no rpc is skipped."""
    table = documented_table()
    assert table["Coordinator"]["/fedsuite.v1.Coordinator/SubmitJob"] == {"admin"}
    rpcs = sum(len(re.findall(r"^\s*rpc \w+\(", p.read_text(), re.M)) for p in PROTOS.glob("*.proto"))
    assert rpcs == sum(len(methods) for methods in table.values())
    assert table["Arbiter"]["/fedsuite.v1.Arbiter/CreateKey"] == {"coordinator"}
