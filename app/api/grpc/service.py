"""KServe V2 / Open Inference Protocol over gRPC: Triton's `inference.GRPCInferenceService`, as
tritonclient.grpc and perf_analyzer speak it.

A thin adapter over app.api.v2.handler, like the HTTP routes and in the same process and event
loop: grpc.codec turns the messages into the V2 codec's structures and back (GrpcTransport),
the handler resolves the model, checks the input, runs it through the same DataPlane (decode
pool, batcher, deadline, cancellation), shapes the outputs, and answers metadata, config and
statistics. No second inference path.

- Messages: generated from the vendored .proto files (app/api/grpc/gen, see generate.sh), so
  the server needs only the grpcio and protobuf runtimes, not a client package.
- Errors: the status table of app/api/errors.py, mapped to gRPC codes (CODES below); the
  message is the same text the HTTP JSON error carries.
- Auth: with a token set, every call but ServerLive and ServerReady (open like the HTTP health
  routes) needs `authorization: Bearer <token>` metadata.
- Deadline: the call's deadline is the request's, capped by the server's request_timeout_ms.
  A call cancelled by its client (or past its deadline) is dropped from the batcher's queue.
- Metrics and V2 statistics count ModelInfer under endpoint="v2_grpc_infer", with the HTTP status
  code of the same outcome (499 for a cancelled call).
- Shutdown: stop() refuses new calls and waits for the accepted ones (their deadline bounds it).

The repository extension's calls (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload)
call the handler's index() / load() / unload(), as the HTTP routes do: the same model control
mode, names and errors (403 -> PERMISSION_DENIED).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from app.api.errors import CLIENT_CLOSED, status_of
from app.api.grpc import codec as grpc_codec
from app.api.grpc.gen import grpc_service_pb2 as pb
from app.api.grpc.observe import observed
from app.api.v2 import codec
from app.api.v2.handler import Transport, V2Handler
from app.config import Settings
from app.errors import DeadlineExceeded, InvalidInput, QueueFull, ServeError
from app.observability.observer import Observer
from app.observability.trace_settings import check_changeable
from app.repository import ServedModel
from app.service import ClientGone

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
ENDPOINT = "v2_grpc_infer"
# status of app/api/errors.py (HTTP's numbers) -> gRPC status code
CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})  # no token needed, like HTTP health
REPOSITORY_METHODS = ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Context], Awaitable[Message]]


class GrpcTransport(Transport[Message]):
    """V2 over gRPC: a ModelInferRequest in, a ModelInferResponse out; the call's deadline
    bounds the request's, and grpc cancels the call at that deadline or when the client
    leaves."""

    endpoint = ENDPOINT

    def __init__(self, request: pb.ModelInferRequest, context: Context) -> None:
        self.request, self.context = request, context

    async def read(self) -> codec.InferRequest:
        return grpc_codec.parse_request(self.request)

    def timeout_ms(self, req: codec.InferRequest) -> float | None:
        """The call's deadline and the request's `timeout` parameter, whichever is sooner
        (DataPlane.deadline caps it by the server's)."""
        candidates = []
        left = self.context.time_remaining()
        if left is not None:
            if left <= 0:
                raise DeadlineExceeded("the call's deadline passed before the request was read")
            candidates.append(left * 1000.0)
        if req.timeout_us is not None:
            candidates.append(req.timeout_us / 1000.0)
        return min(candidates) if candidates else None

    def past_deadline(self) -> bool:
        left = self.context.time_remaining()  # grpc cancels the call at its deadline too
        return left is not None and left <= 0

    def encode(
        self, model: ServedModel, req: codec.InferRequest, outputs: list[codec.OutputTensor]
    ) -> Message:
        return grpc_codec.encode_response(model.name, model.config.version, req.id, outputs)


class InferenceService:
    """One method per RPC: (request message, context) -> response message; ServeError out."""

    def __init__(self, v2: V2Handler, observer: Observer) -> None:
        self.v2 = v2
        self.observer = observer  # request IDs, access lines, traces; the trace settings

    # ------------------------------------------------------------------- server
    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Message:
        return pb.ServerReadyResponse(ready=self.v2.ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Message:
        return pb.ServerMetadataResponse(**V2Handler.server_metadata())

    # ------------------------------------------------------------------- models
    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Message:
        try:
            model = self.v2.model(request.name, request.version or None)
        except ServeError:  # as tritonclient.http: an unknown model or version is "not ready"
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=model.ready)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Message:
        return grpc_codec.model_metadata(
            self.v2.model_metadata(request.name, request.version or None)
        )

    async def model_config(self, request: pb.ModelConfigRequest, context: Context) -> Message:
        return grpc_codec.model_config(self.v2.model_config(request.name, request.version or None))

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> Message:
        stats = self.v2.statistics(request.name or None, request.version or None)
        return grpc_codec.model_statistics(stats)

    # ------------------------------------------------------------------- inference
    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> Message:
        return await self.v2.infer(
            request.model_name, request.model_version or None, GrpcTransport(request, context)
        )

    # ------------------------------------------------------------------- repository
    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> Message:
        self._check_repository_name(request.repository_name)
        entries = self.v2.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version or "", state=e.state.value, reason=e.reason
                )
                for e in entries
            ]
        )

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> Message:
        self._check_repository_name(request.repository_name)
        await self.v2.load(request.model_name, request.parameters.keys())
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> Message:
        self._check_repository_name(request.repository_name)
        await self.v2.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------------- trace extension
    async def trace_setting(self, request: pb.TraceSettingRequest, context: Context) -> Message:
        """Triton's trace extension (app/api/http/trace.py over HTTP): a call with no setting
        reads them (tritonclient's get_trace_settings), one with settings changes them; a
        setting with no value clears it."""
        traces = self.observer.trace_settings
        model = request.model_name or None
        if model is not None:
            self.v2.model(model)  # 404 for a model not served
        if not request.settings:
            current = traces.get(model)
        else:
            check_changeable(self.v2.settings.workers)
            changes = {k: list(v.value) or None for k, v in request.settings.items()}
            current = traces.update(model, changes)
        return pb.TraceSettingResponse(
            settings={
                k: pb.TraceSettingResponse.SettingValue(value=v if isinstance(v, list) else [v])
                for k, v in current.items()
            }
        )

    @staticmethod
    def _check_repository_name(name: str) -> None:
        """This server has one repository, which answers to no name or to "" only."""
        if name:
            raise InvalidInput(
                f"unknown repository {name!r}: this server has one model repository; "
                "leave repository_name empty"
            )


# RPC name -> (InferenceService method, request message class)
METHODS: dict[str, tuple[str, type[Message]]] = {
    "ServerLive": ("server_live", pb.ServerLiveRequest),
    "ServerReady": ("server_ready", pb.ServerReadyRequest),
    "ServerMetadata": ("server_metadata", pb.ServerMetadataRequest),
    "ModelReady": ("model_ready", pb.ModelReadyRequest),
    "ModelMetadata": ("model_metadata", pb.ModelMetadataRequest),
    "ModelConfig": ("model_config", pb.ModelConfigRequest),
    "ModelStatistics": ("model_statistics", pb.ModelStatisticsRequest),
    "ModelInfer": ("model_infer", pb.ModelInferRequest),
    "RepositoryIndex": ("repository_index", pb.RepositoryIndexRequest),
    "RepositoryModelLoad": ("repository_model_load", pb.RepositoryModelLoadRequest),
    "RepositoryModelUnload": ("repository_model_unload", pb.RepositoryModelUnloadRequest),
    "TraceSetting": ("trace_setting", pb.TraceSettingRequest),
}


def _guarded(name: str, method: Handler, token: bytes | None) -> Handler:
    """The RPC with auth and the error table around it."""
    needs_token = token is not None and name not in OPEN_METHODS

    async def call(request: Any, context: Context) -> Message:
        if needs_token:
            given = b""
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    given = value.encode() if isinstance(value, str) else value
                    break
            if not hmac.compare_digest(given, token or b""):
                why = "missing" if not given else "wrong"
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{why} bearer token: send metadata 'authorization: Bearer <token>'",
                )
        try:
            return await method(request, context)
        except ServeError as exc:
            if context.done():  # cancelled or past its deadline: nobody to answer
                raise asyncio.CancelledError() from exc
            if isinstance(exc, QueueFull):  # beside the x-request-id already there (observe.py)
                context.set_trailing_metadata(
                    (
                        *(context.trailing_metadata() or ()),
                        ("retry-after", str(max(1, round(exc.retry_after_s)))),
                    )
                )
            code = CODES.get(status_of(exc), grpc.StatusCode.INTERNAL)
            await context.abort(code, exc.message)
        except ClientGone:
            await context.abort(grpc.StatusCode.CANCELLED, f"{CLIENT_CLOSED}: client gone")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return call


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def handler(service: InferenceService, token: str | None) -> grpc.GenericRpcHandler:
    secret = f"Bearer {token}".encode() if token else None
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            # observed outside the guard: refused and failed calls are seen too
            observed(name, _guarded(name, getattr(service, attr), secret), service.observer),
            request_deserializer=cls.FromString,
            response_serializer=_serialize,
        )
        for name, (attr, cls) in METHODS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def max_message_bytes(settings: Settings) -> int:
    return settings.grpc_max_message_bytes or settings.max_body_bytes


async def start(settings: Settings, v2: V2Handler, observer: Observer) -> grpc.aio.Server | None:
    """Serve gRPC on settings.grpc_port (0: not at all) in the running event loop. With several
    workers each binds the port with SO_REUSEPORT and the kernel spreads the connections; a
    single process binds it exclusively, so a port already taken is an error at start-up, not
    a second server silently sharing it."""
    if not settings.grpc_port:
        return None
    limit = max_message_bytes(settings)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
    )
    server.add_generic_rpc_handlers((handler(InferenceService(v2, observer), settings.auth_token),))
    address = f"{settings.host}:{settings.grpc_port}"
    if ":" in settings.host:  # IPv6 literal
        address = f"[{settings.host}]:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot serve gRPC on {address} ({exc}): set RESNET_SERVE_GRPC_PORT "
            "(--grpc-port) to a free port, or 0 to turn gRPC off"
        ) from exc
    await server.start()
    log.info("KServe V2 gRPC on %s (messages up to %d bytes)", address, limit)
    return server


async def stop(server: grpc.aio.Server | None, settings: Settings) -> None:
    """Refuse new calls, answer the accepted ones: each has a deadline no later than
    request_timeout_ms, so that (plus a margin for the answer) bounds the wait."""
    if server is not None:
        await server.stop(grace=settings.request_timeout_ms / 1000.0 + 5.0)
