#!/usr/bin/env sh
# Regenerates the Python modules of this folder from the vendored .proto files (Triton's
# triton-inference-server/common, protobuf/, BSD-3-Clause: LICENSE) with grpcio-tools (the dev
# extra). The output is committed, so installing or running the server needs no build step and
# only the protobuf and grpcio runtimes; tests/api/grpc/test_gen.py checks it is up to date.
#   usage: app/api/grpc/gen/generate.sh [PYTHON] [OUT_DIR]   (default: python3, this folder)
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${1:-python3}"
OUT="${2:-$HERE}"
# Messages only: app/api/grpc/service.py registers its own method handlers, so no *_pb2_grpc.
"$PY" -m grpc_tools.protoc -I "$HERE" --python_out="$OUT" --pyi_out="$OUT" \
    "$HERE/model_config.proto" "$HERE/grpc_service.proto"
# protoc writes `import model_config_pb2`, a top-level import: make it package-relative.
for f in "$OUT/grpc_service_pb2.py" "$OUT/grpc_service_pb2.pyi"; do
    sed -i 's/^import model_config_pb2 as/from . import model_config_pb2 as/' "$f"
done
