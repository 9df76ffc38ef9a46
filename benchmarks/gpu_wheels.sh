#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels a bare GPU machine lacks to run resnet-serve, its GPU
# tests and the bench client: that machine has Python 3.12, torch, torchvision, Pillow, numpy,
# onnx and a CPU onnxruntime, and no internet. benchmarks/gpu_check.sh installs them with
# `pip install --no-deps --target /tmp/site` and PYTHONPATH.
#
#   benchmarks/gpu_wheels.sh            # then carry .whl/ to the GPU machine with the tree
#
# Pure-Python and manylinux x86_64 wheels for CPython 3.12, exact versions (the pins of
# pyproject.toml where it has them, else those of the dev venv). About 19 MB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${DEST:-$ROOT/.whl}"
PIP="${PIP:-pip}"
if ! command -v "$PIP" >/dev/null 2>&1; then PIP="python3 -m pip"; fi

# server (fastapi, uvicorn[standard]'s fast loop and parser, pydantic, prometheus, multipart)
SERVER=(
  fastapi==0.163.2 starlette==1.10.0 annotated-doc==0.0.7 opentelemetry-api==1.45.2
  pydantic==2.14.3 pydantic-core==2.50.4 pydantic-settings==2.16.3 annotated-types==0.8.0
  typing-extensions==4.16.0 typing-inspection==0.4.5 python-dotenv==1.2.4
  uvicorn==0.54.0 h11==0.16.0 httptools==0.9.0 uvloop==0.23.0 click==8.5.1
  python-multipart==0.0.34 prometheus-client==0.26.0 anyio==4.16.0 idna==3.20
  grpcio==1.85.3 fastapi-offline==1.7.7
  # the gRPC messages (app/api/grpc/gen) need protobuf >= 6.33.5; the machine's onnx may bring
  # an older one, which this shadows on PYTHONPATH (onnx's own messages accept 6.33)
  protobuf==6.33.6
)
# bench client and tests
CLIENT=(
  httpx==0.28.1 httpcore==1.0.9 certifi==2026.10.19.post1
  pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4 pygments==2.21.0
  pytest-asyncio==1.5.0 pytest-timeout==2.4.0
)

mkdir -p "$DEST"
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  --dest "$DEST" "${SERVER[@]}" "${CLIENT[@]}"
count=$(find "$DEST" -name '*.whl' | wc -l)
echo "gpu_wheels: $count wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
