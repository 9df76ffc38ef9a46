"""The committed gRPC messages (app/api/grpc/gen) are what generate.sh makes from the vendored
.proto files today, and they describe Triton's service as tritonclient.grpc calls it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GEN = Path(__file__).resolve().parents[3] / "app" / "api" / "grpc" / "gen"
GENERATED = [
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "model_config_pb2.py",
    "model_config_pb2.pyi",
]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates the code")
    subprocess.run(["sh", str(GEN / "generate.sh"), sys.executable, str(tmp_path)], check=True)
    for name in GENERATED:
        assert (tmp_path / name).read_text() == (GEN / name).read_text(), (
            f"{name} is stale: run app/api/grpc/gen/generate.sh"
        )


def test_every_served_method_is_in_the_service() -> None:
    from app.api.grpc.gen import grpc_service_pb2 as pb
    from app.api.grpc.service import METHODS, SERVICE

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == SERVICE
    for name, (_, request_class) in METHODS.items():
        method = service.methods_by_name[name]
        assert method.input_type.full_name == request_class.DESCRIPTOR.full_name
