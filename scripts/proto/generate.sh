#!/usr/bin/env bash
# Regenerates Sources/SpeechainMPI/Runner/TensorBoard/TensorBoardEvent.pb.swift from tensorboard_event.proto.
# Only needed when the .proto changes; the generated file is committed and nothing in the build or CI runs this.
#
# Needs protoc (Debian: apt-get install -y protobuf-compiler) and protoc-gen-swift of the swift-protobuf release
# Package.swift depends on (1.39.0), built outside this repository, e.g.:
#   git clone https://github.com/apple/swift-protobuf /tmp/swift-protobuf && cd /tmp/swift-protobuf
#   git checkout 1.39.0 && swift build -c release --product protoc-gen-swift
# then: PROTOC_GEN_SWIFT=/tmp/swift-protobuf/.build/release/protoc-gen-swift scripts/proto/generate.sh
set -euo pipefail
cd "$(dirname "$0")"
plugin="${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}"
if [[ -z "$plugin" || ! -x "$plugin" ]]; then
    echo "generate.sh: protoc-gen-swift not found; set PROTOC_GEN_SWIFT to its path (see the comment at the top)" >&2
    exit 1
fi
out=../../Sources/SpeechainMPI/Runner/TensorBoard
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc --plugin=protoc-gen-swift="$plugin" --swift_out="$tmp" --swift_opt=Visibility=Internal tensorboard_event.proto
mv "$tmp/tensorboard_event.pb.swift" "$out/TensorBoardEvent.pb.swift"
echo "wrote $out/TensorBoardEvent.pb.swift"
