#!/usr/bin/env bash
# Regenerates the Ruby protobuf and gRPC code in lib/ from protos/fedsuite/v1 (committed, so that
# the client runs with nothing but Debian's ruby-grpc; a test fails when it is stale).
# Usage: examples/clients/ruby/generate.sh [OUT_DIR]   (default: examples/clients/ruby/lib)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$here/lib}"
# The well-known types (google/protobuf/*.proto) come from Debian's libprotobuf-dev.
include=/usr/include
[ -e "$include/google/protobuf/timestamp.proto" ] \
    || { echo "generate.sh: $include/google/protobuf/timestamp.proto is missing; run scripts/test-tools.sh" >&2; exit 1; }
mkdir -p "$out"
rm -rf "$out/fedsuite"
cd "$root/protos"
grpc_tools_ruby_protoc -I. -I"$include" --ruby_out="$out" --grpc_out="$out" fedsuite/v1/*.proto
