"""What a client author in another language relies on in protos/: the options that place generated code,
protos that compile for other languages as they are, a comment on every element that reflection
serves too, every default in its field's comment, and times as Timestamp/Duration, never as numbers.

The comments come from libs/fedcore/proto/descriptors.binpb, the descriptor set (with source info)
that server reflection publishes, so these tests also prove `grpcurl describe` has them.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2
from fedcore.vertical.params import HeteroLRParams

from fedsuite.coordinator.specs import normalise
from fedsuite.jobfile import parse_job_spec
from fedsuite.translate import HETERO_ENUMS, seconds

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
DESCRIPTORS = ROOT / "libs" / "fedcore" / "proto" / "descriptors.binpb"
OPTIONS = {
    "csharp_namespace": "Fedsuite.V1",
    "go_package": "github.com/fedsuite/fedsuite/gen/go/fedsuite/v1;fedsuitev1",
    "java_multiple_files": True,
    "java_package": "dev.fedsuite.v1",
    "objc_class_prefix": "FSX",
    "php_namespace": "Fedsuite\\V1",
    "ruby_package": "Fedsuite::V1",
}
"""The same in every file: one package per language, as the proto package is one."""
TIME_LIKE = re.compile(r"(^time|_at|_time|_s|seconds|_seen|timeout|interval)$")
"""Field names that would mean a point in time or a length of time."""

# FileDescriptorProto / DescriptorProto / EnumDescriptorProto / ServiceDescriptorProto field numbers,
# the path elements of SourceCodeInfo.Location.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _ONEOF = 2, 3, 4, 8
_VALUE, _METHOD = 2, 2


def fedsuite_files() -> list[descriptor_pb2.FileDescriptorProto]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes()).file
    return [f for f in files if f.name.startswith("fedsuite/")]


def test_the_descriptor_set_covers_every_proto_file() -> None:
    assert sorted(f.name for f in fedsuite_files()) == sorted(
        str(p.relative_to(PROTOS)) for p in PROTOS.glob("fedsuite/v1/*.proto"))


@pytest.mark.parametrize("file", fedsuite_files(), ids=lambda f: f.name)
def test_every_proto_sets_the_options_other_languages_need(file: descriptor_pb2.FileDescriptorProto) -> None:
    options = {name: getattr(file.options, name) for name in OPTIONS if file.options.HasField(name)}
    assert options == OPTIONS, f"{file.name}: set these options as the other files do"
    stem = Path(file.name).stem
    assert file.options.java_outer_classname == f"{stem.capitalize()}Proto", file.name  # never clashes with a type


def test_the_protos_compile_for_other_languages_as_they_are(tmp_path: Path) -> None:
    """protoc's built-in generators take the files unedited (Debian's protoc; Go's plugin is not part of
    it, so go_package is checked above by value)."""
    from grpc_tools import protoc as bundled

    protoc = shutil.which("protoc")
    assert protoc, "protoc is missing: run scripts/test-tools.sh (it installs Debian's protobuf-compiler)"
    outputs = {language: tmp_path / language for language in ("cpp", "csharp", "java", "objc", "php", "ruby")}
    for out in outputs.values():
        out.mkdir()
    include = Path(bundled.__file__).parent / "_proto"  # the well-known types' .proto files
    run = subprocess.run(
        [protoc, f"-I{PROTOS}", f"-I{include}",
         *[f"--{language}_out={out}" for language, out in outputs.items()],
         *[str(p.relative_to(PROTOS)) for p in sorted(PROTOS.glob("fedsuite/v1/*.proto"))]],
        capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr
    assert (outputs["java"] / "dev" / "fedsuite" / "v1" / "HorizontalJobSpec.java").is_file()  # one file per type
    assert (outputs["php"] / "Fedsuite" / "V1" / "HorizontalJobSpec.php").is_file()
    assert "namespace Fedsuite.V1" in (outputs["csharp"] / "Coordinator.cs").read_text()
    assert "module Fedsuite\n  module V1\n" in (outputs["ruby"] / "fedsuite" / "v1" / "coordinator_pb.rb").read_text()
    assert "FSXHorizontalJobSpec" in (outputs["objc"] / "fedsuite" / "v1" / "Coordinator.pbobjc.h").read_text()


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source-info path, dotted name) of every message, field, oneof, enum, value, service and method."""

    def enum(path: tuple[int, ...], e: descriptor_pb2.EnumDescriptorProto, name: str) -> Iterator[tuple[tuple[int, ...], str]]:
        yield path, name
        for i, value in enumerate(e.value):
            yield (*path, _VALUE, i), f"{name}.{value.name}"

    def message(path: tuple[int, ...], m: descriptor_pb2.DescriptorProto, name: str) -> Iterator[tuple[tuple[int, ...], str]]:
        if m.options.map_entry:
            return
        yield path, name
        for i, f in enumerate(m.field):
            yield (*path, _FIELD, i), f"{name}.{f.name}"
        for i, o in enumerate(m.oneof_decl):
            if not o.name.startswith("_"):  # proto3 `optional` makes a synthetic oneof
                yield (*path, _ONEOF, i), f"{name}.{o.name}"
        for i, nested in enumerate(m.nested_type):
            yield from message((*path, _NESTED, i), nested, f"{name}.{nested.name}")
        for i, e in enumerate(m.enum_type):
            yield from enum((*path, _NESTED_ENUM, i), e, f"{name}.{e.name}")

    for i, m in enumerate(file.message_type):
        yield from message((_MESSAGE, i), m, m.name)
    for i, e in enumerate(file.enum_type):
        yield from enum((_ENUM, i), e, e.name)
    for i, s in enumerate(file.service):
        yield (_SERVICE, i), s.name
        for j, method in enumerate(s.method):
            yield (_SERVICE, i, _METHOD, j), f"{s.name}.{method.name}"


def comments() -> dict[str, str]:
    """Full element name -> its leading comment, as reflection serves it."""
    found: dict[str, str] = {}
    for file in fedsuite_files():
        leading = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for path, name in _elements(file):
            found[f"{file.package}.{name}"] = " ".join(leading.get(path, "").split())
    return found


def test_every_element_reflection_serves_has_a_comment() -> None:
    found = comments()
    assert len(found) > 300  # the walk reached everything: messages, fields, values, methods
    missing = sorted(name for name, comment in found.items() if not comment)
    assert not missing, f"elements without a comment (write one above each): {missing}"


def _spellings(value: object, field: FieldDescriptor | None) -> set[str]:
    """How a comment may write the default ``value`` of ``field``."""
    if isinstance(value, Message):  # a Duration
        return {f"{seconds(value):g} s"}  # type: ignore[arg-type]
    if field is not None and field.type == FieldDescriptor.TYPE_ENUM:
        return {field.enum_type.values_by_number[value].name}  # type: ignore[index]
    if isinstance(value, bool):
        return {str(value).lower()}
    if isinstance(value, float) and math.isfinite(value):
        exponent = f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
        return {f"{value:g}", repr(value), exponent}
    return {str(value)}


def _says_default(comment: str, value: object, field: FieldDescriptor | None) -> bool:
    return any(re.search(rf"\b(0|unset|unset or 0): {re.escape(text)}(?!\w|\.\d)", comment, re.I)
               for text in _spellings(value, field))


def _filled_in(given: Message, normalised: Message) -> Iterator[tuple[FieldDescriptor, object]]:
    """Scalar (and Duration) fields normalise() filled in that the given message left unset."""
    for field, value in normalised.ListFields():
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and field.message_type.full_name != "google.protobuf.Duration":
            continue
        if value != getattr(given, field.name) or (field.has_presence and not given.HasField(field.name)):
            yield field, value


@pytest.mark.parametrize("job", [
    {"horizontal": {"dataset": "d", "model": {"type": "logistic_regression"}}},
    {"horizontal": {"dataset": "d", "model": {"type": "logistic_regression"}, "secure_aggregation": "paillier"}},
    {"vertical": {"guest": "g", "hosts": ["h"], "guest_dataset": "a", "host_dataset": "b"}},
    {"vertical_predict": {"guest": "g", "hosts": ["h"], "guest_dataset": "a", "host_dataset": "b", "model_id": "m"}},
    {"horizontal_predict": {"dataset": "d", "model_job_id": "j"}},
], ids=["horizontal", "horizontal-paillier", "vertical", "vertical_predict", "horizontal_predict"])
def test_every_default_normalise_fills_in_is_in_the_field_comment(job: dict[str, object]) -> None:
    """The defaults are the code's (specs.normalise), so a changed default with a stale comment fails here."""
    spec = parse_job_spec(job)
    kind = spec.WhichOneof("kind")
    assert kind is not None
    given, normalised = getattr(spec, kind), getattr(normalise(spec), kind)
    found = comments()
    filled = list(_filled_in(given, normalised))
    assert filled  # normalise did fill some in
    stale = [(f.full_name, found[f.full_name]) for f, value in filled if not _says_default(found[f.full_name], value, f)]
    assert not stale, f"these comments do not give the default normalise() fills in: {stale}"


def test_every_hetero_lr_default_is_in_the_field_comment() -> None:
    """The vertical defaults are fedcore.vertical.params.HeteroLRParams', on the wire each enum's UNSPECIFIED."""
    defaults = HeteroLRParams()
    found = comments()
    fields = vertical_pb2.HeteroLRParams.DESCRIPTOR.fields
    assert {f.name for f in fields} == set(defaults.to_dict())
    stale = []
    for field in fields:
        value = getattr(defaults, field.name)
        if field.name in HETERO_ENUMS:
            prefix = field.enum_type.values[0].name.removesuffix("UNSPECIFIED")
            value = field.enum_type.values_by_name[prefix + value.upper()].number
        if not _says_default(found[field.full_name], value, field):
            stale.append((field.full_name, found[field.full_name]))
    assert not stale, f"these comments do not give HeteroLRParams' default: {stale}"


def test_times_are_timestamps_and_durations_never_numbers() -> None:
    numbers = []
    for file in fedsuite_files():
        for message in file.message_type:
            for field in message.field:
                if TIME_LIKE.search(field.name) and field.type != descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
                    numbers.append(f"{message.name}.{field.name}")
    assert not numbers, f"use google.protobuf.Timestamp or Duration for {numbers}"
    job = pb.Job.DESCRIPTOR.fields_by_name
    assert job["created_at"].message_type.full_name == "google.protobuf.Timestamp"
    assert pb.JobEvent.DESCRIPTOR.fields_by_name["time"].message_type.full_name == "google.protobuf.Timestamp"
    assert (pb.HorizontalJobSpec.DESCRIPTOR.fields_by_name["round_timeout"].message_type.full_name
            == "google.protobuf.Duration")
