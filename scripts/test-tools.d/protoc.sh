#!/usr/bin/env bash
# protoc with its built-in generators (C++, C#, Java, Objective-C, PHP, Ruby), for
# tests/unit/test_proto_api.py: the protos must compile for other languages as they are. Debian's
# protobuf-compiler has them all (grpc_tools' bundled protoc only has Python's).
set -euo pipefail
if command -v protoc >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "test-tools: installing protoc (Debian package protobuf-compiler)" >&2
$SUDO apt-get update -qq -o DPkg::Lock::Timeout=300
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
    protobuf-compiler >/dev/null
command -v protoc >/dev/null 2>&1 \
    || { echo "test-tools: apt-get installed protobuf-compiler but protoc is not on PATH" >&2; exit 1; }
