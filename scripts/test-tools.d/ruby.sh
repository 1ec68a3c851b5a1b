#!/usr/bin/env bash
# Ruby gRPC, for tests/integration/test_clients_other_languages.py: examples/clients/ruby runs a job
# with Debian's ruby-grpc and ruby-google-protobuf, and its committed generated code is compared
# with a fresh run of grpc_tools_ruby_protoc (Debian's ruby-grpc-tools), which finds the well-known
# types' .proto files (google/protobuf/timestamp.proto...) in /usr/include from libprotobuf-dev.
set -euo pipefail
if command -v grpc_tools_ruby_protoc >/dev/null 2>&1 && [ -e /usr/include/google/protobuf/timestamp.proto ] && ruby -e 'require "grpc"; require "google/protobuf"' >/dev/null 2>&1; then
    exit 0
fi
. "$(dirname "$0")/../test-tools-apt.bash"
apt_install "Ruby gRPC" ruby ruby-grpc ruby-google-protobuf ruby-grpc-tools libprotobuf-dev
ruby -e 'require "grpc"; require "google/protobuf"' >/dev/null 2>&1 \
    || { echo "test-tools: apt-get installed ruby-grpc but Ruby cannot require grpc" >&2; exit 1; }
command -v grpc_tools_ruby_protoc >/dev/null 2>&1 \
    || { echo "test-tools: apt-get installed ruby-grpc-tools but grpc_tools_ruby_protoc is not on PATH" >&2; exit 1; }
[ -e /usr/include/google/protobuf/timestamp.proto ] \
    || { echo "test-tools: apt-get installed libprotobuf-dev but /usr/include/google/protobuf/timestamp.proto is missing" >&2; exit 1; }
