"""OpenTelemetry traces of a real server, received by a real OTLP/HTTP receiver on 127.0.0.1
(tests/otlp_receiver.py: the protobuf decoded with opentelemetry-proto): the span tree of a
request over HTTP and over gRPC, the caller's trace continued, a batch span linked to every
request it served (and each request's infer span linked back), no span for probes, the
x-request-id of gRPC answers, and Triton's trace settings steering the sampler."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from app.api.grpc.gen import grpc_service_pb2 as pb
from tests.conftest import encode
from tests.fakes import PLUGIN, write_fake_model
from tests.otlp_receiver import Receiver, Span

pytestmark = pytest.mark.e2e

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
GRPC_TRACE = "0af7651916cd43dd8448eb211c80319c"
GRPC_SPAN = "b7ad6b7169203331"
SERVER_KIND = 2  # opentelemetry-proto's SPAN_KIND_SERVER
CHILDREN = ["read", "decode", "queue", "infer", "postprocess"]
REQUEST_ID = "resnet_serve.request_id"


def binary_pixels(value: int) -> tuple[bytes, dict[str, str]]:
    """A V2 request of one image as binary tensor data (read in no time, unlike JSON)."""
    data = np.full((1, 224, 224, 3), value, np.uint8).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [1, 224, 224, 3],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    return header + data, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def metadata(pairs: Any, key: str) -> Any:
    """One value of a gRPC call's (trailing) metadata."""
    return dict(tuple(pair) for pair in pairs or ()).get(key)


def by_request_id(spans: list[Span]) -> dict[str, Span]:
    return {str(s.attributes[REQUEST_ID]): s for s in spans if REQUEST_ID in s.attributes}


def children(spans: list[Span], parent: Span) -> list[Span]:
    found = [s for s in spans if s.parent_span_id == parent.span_id]
    return sorted(found, key=lambda s: s.start_ns)


def check_tree(spans: list[Span], request: Span, decoded: bool) -> Span:
    """The request span's children: one per phase, in order, tiling it; its infer span."""
    kids = children(spans, request)
    names = [k.name for k in kids]
    assert names == (CHILDREN if decoded else [n for n in CHILDREN if n != "decode"]), names
    assert all(k.trace_id == request.trace_id for k in kids)
    assert kids[0].start_ns == request.start_ns
    for a, b in zip(kids, kids[1:], strict=False):
        assert a.end_ns == b.start_ns, (a.name, b.name)  # contiguous
    assert kids[-1].end_ns <= request.end_ns
    (infer,) = [k for k in kids if k.name == "infer"]
    return infer


def test_spans_over_http_and_grpc(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    # one instance taking 0.5 s a batch: requests sent while it runs share the next batch
    write_fake_model(
        repo, "fake", options={"delay_s": 0.5}, batching={"max_batch_size": 8, "instances": 1}
    )
    photo = encode(Image.new("RGB", (320, 240), (40, 90, 160)), "JPEG")
    with Receiver() as receiver:
        env = {
            "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "resnet-serve-e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        server = start_server(repo, env=env)
        url = server.url
        # 1. a caller's trace continued, over /v1 classify (decoded on the server)
        r = httpx.post(
            f"{url}/v1/models/fake/classify",
            content=photo,
            headers={
                "Content-Type": "image/jpeg",
                "X-Request-ID": "traced-1",
                "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            },
            timeout=30,
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "traced-1"
        # 2. three V2 requests sent while the instance runs a fourth: one batch of three
        with ThreadPoolExecutor(4) as pool:

            def infer(request_id: str) -> httpx.Response:
                body, headers = binary_pixels(5)
                return httpx.post(
                    f"{url}/v2/models/fake/infer",
                    content=body,
                    headers={"X-Request-ID": request_id, **headers},
                    timeout=30,
                )

            blocker = pool.submit(infer, "blocker")
            time.sleep(0.2)
            batched = [pool.submit(infer, f"batched-{i}") for i in range(3)]
            assert blocker.result().status_code == 200
            assert all(f.result().status_code == 200 for f in batched)
        # 3. gRPC, the caller's trace in the metadata (tritonclient passes headers as metadata)
        client = grpcclient.InferenceServerClient(url=server.grpc_url)
        inp = grpcclient.InferInput("images", [1, 224, 224, 3], "UINT8")
        inp.set_data_from_numpy(np.full((1, 224, 224, 3), 9, np.uint8))
        res = client.infer(
            "fake",
            [inp],
            headers={
                "traceparent": f"00-{GRPC_TRACE}-{GRPC_SPAN}-01",
                "x-request-id": "grpc-traced",
            },
        )
        assert res.get_response().id == "grpc-traced"  # no id in the request: the call's
        client.close()
        # 4. x-request-id in the trailing metadata of gRPC answers, errors included
        with grpc.insecure_channel(server.grpc_url) as channel:
            model_infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            request = pb.ModelInferRequest(
                model_name="fake",
                inputs=[
                    pb.ModelInferRequest.InferInputTensor(
                        name="images", datatype="UINT8", shape=[1, 224, 224, 3]
                    )
                ],
                raw_input_contents=[bytes(224 * 224 * 3)],
            )
            answer, call = model_infer.with_call(request, metadata=(("x-request-id", "raw-1"),))
            assert metadata(call.trailing_metadata(), "x-request-id") == "raw-1"
            assert answer.id == "raw-1"
            request.model_name = "nope"
            with pytest.raises(grpc.RpcError) as info:
                model_infer(request, metadata=(("x-request-id", "raw-2"),))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert metadata(info.value.trailing_metadata(), "x-request-id") == "raw-2"
            request.model_name = "fake"
            too_long = "x" * 200  # grpc refuses to send non-ASCII: too long is hostile too
            _, call = model_infer.with_call(request, metadata=(("x-request-id", too_long),))
            replaced = metadata(call.trailing_metadata(), "x-request-id")
            assert replaced != too_long and len(replaced) == 32
        # 5. probes and metadata are not traced
        assert httpx.get(f"{url}/health/ready").status_code == 200
        assert httpx.get(f"{url}/v2/models/fake").status_code == 200

        # 6. Triton's trace settings (tritonclient) steer the sampler
        triton = httpclient.InferenceServerClient(url.removeprefix("http://"))
        assert triton.get_trace_settings()["trace_mode"] == "opentelemetry"
        triton.update_trace_settings(settings={"trace_level": ["OFF"]})
        assert infer("while-off").status_code == 200
        after = triton.update_trace_settings(
            model_name="fake", settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "2"}
        )
        assert after["trace_level"] == ["TIMESTAMPS"] and after["trace_rate"] == "2"
        for i in range(4):
            assert infer(f"rate-{i}").status_code == 200
        grpc_client = grpcclient.InferenceServerClient(url=server.grpc_url)
        over_grpc = grpc_client.get_trace_settings(model_name="fake", as_json=True)
        assert over_grpc["settings"]["trace_rate"]["value"] == ["2"]
        grpc_client.close()
        triton.close()

        assert server.stop() == 0  # the exporter sends what it still holds at shutdown
        spans = receiver.received()

    assert {s.service for s in spans} == {"resnet-serve-e2e"}
    requests = by_request_id([s for s in spans if s.kind == SERVER_KIND])
    traced = {"traced-1", "blocker", "grpc-traced", "raw-1", "rate-0", "rate-2"}
    traced |= {f"batched-{i}" for i in range(3)}
    made = [k for k in requests if len(k) == 32]  # the one whose hostile ID was replaced
    assert set(requests) == traced | set(made) and len(made) == 1, sorted(requests)
    batches = {s.span_id: s for s in spans if s.name == "batch"}

    # the caller's trace continued
    v1 = requests["traced-1"]
    assert v1.name == "POST /v1/models/{name}/classify"
    assert (v1.trace_id, v1.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert v1.attributes["http.response.status_code"] == 200
    assert (
        v1.attributes["resnet_serve.model"] == "fake" and v1.attributes["resnet_serve.images"] == 1
    )
    infer_span = check_tree(spans, v1, decoded=True)
    ((link_trace, link_span),) = infer_span.links
    batch = batches[link_span]
    assert batch.trace_id == link_trace and (v1.trace_id, v1.span_id) in batch.links

    # one batch of three, linked to each of its requests, each linking back
    three = [requests[f"batched-{i}"] for i in range(3)]
    (batch,) = [b for b in batches.values() if (three[0].trace_id, three[0].span_id) in b.links]
    assert batch.attributes["resnet_serve.batch_size"] == 3
    assert sorted(batch.links) == sorted((s.trace_id, s.span_id) for s in three)
    assert batch.end_ns - batch.start_ns >= 0.5e9
    for s in three:
        assert s.parent_span_id == ""  # no caller trace: a root
        infer_span = check_tree(spans, s, decoded=False)
        assert infer_span.links == [(batch.trace_id, batch.span_id)]
        assert infer_span.attributes["resnet_serve.batch_size"] == 3
        assert (infer_span.start_ns, infer_span.end_ns) == (batch.start_ns, batch.end_ns)

    # gRPC: the same tree, the caller's trace continued
    g = requests["grpc-traced"]
    assert g.name == "inference.GRPCInferenceService/ModelInfer"
    assert (g.trace_id, g.parent_span_id) == (GRPC_TRACE, GRPC_SPAN)
    assert g.attributes["rpc.system"] == "grpc" and g.attributes["rpc.grpc.status_code"] == 0
    check_tree(spans, g, decoded=False)

    # every batch span links to a request span that was received
    spans_by_id = {(s.trace_id, s.span_id) for s in spans}
    for b in batches.values():
        assert b.links and all(link in spans_by_id for link in b.links)
