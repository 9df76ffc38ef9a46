"""KServe V2 / Open Inference Protocol over gRPC: Triton's `inference.GRPCInferenceService`, as
tritonclient.grpc and perf_analyzer speak it.

A thin adapter, like v2.py and in the same process and event loop as HTTP: grpc_codec turns the
messages into v2_codec's structures, then v2.py's own functions resolve the model, check the
input, run it through the same DataPlane (decode pool, batcher, deadline, cancellation) and
shape the outputs; v2_schema answers metadata, config and statistics. No second inference path.

- Messages: generated from the vendored .proto files (app/api/grpc/gen, see generate.sh), so
  the server needs only the grpcio and protobuf runtimes, not a client package.
- Errors: the HTTP status table of app/api/errors.py, mapped to gRPC codes (CODES below); the
  message is the same text the HTTP JSON error carries.
- Auth: with a token set, every call but ServerLive and ServerReady (open like the HTTP health
  routes) needs `authorization: Bearer <token>` metadata.
- Deadline: the call's deadline is the request's, capped by the server's request_timeout_ms.
  A call cancelled by its client (or past its deadline) is dropped from the batcher's queue.
- Metrics and V2 statistics count ModelInfer under endpoint="v2_grpc_infer", with the HTTP status
  code of the same outcome (499 for a cancelled call).
- Shutdown: stop() refuses new calls and waits for the accepted ones (their deadline bounds it).

The repository extension's calls (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload)
call the same ModelRepository.index() / load() / unload() as the HTTP routes
(app/api/http/repository.py): the same model control mode, names and errors
(403 -> PERMISSION_DENIED).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from app import __version__
from app.api.errors import CLIENT_CLOSED, status_of
from app.api.grpc import codec as grpc_codec
from app.api.grpc.gen import grpc_service_pb2 as pb
from app.api.grpc.observe import observed
from app.api.http.repository import refuse_load_parameters
from app.api.http.trace import check_changeable
from app.api.http.v2 import input_batch, output_tensors, requested_outputs, resolve
from app.api.recording import recorded
from app.api.v2 import schema
from app.config import Settings
from app.errors import DeadlineExceeded, InvalidInput, QueueFull, ServeError
from app.observability.observer import Observer
from app.observability.request import request_id
from app.service import ClientGone, DataPlane

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
ENDPOINT = "v2_grpc_infer"
# HTTP status of app/api/errors.py -> gRPC status code
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


class InferenceService:
    """One method per RPC: (request message, context) -> response message; ServeError out."""

    def __init__(self, settings: Settings, state: Any) -> None:
        self.settings = settings
        self.state = state  # the FastAPI app.state: dataplane, repository, draining

    @property
    def observer(self) -> Observer:
        # type-ignore reason: as dataplane below; create_app sets observer
        return self.state.observer  # type: ignore[no-any-return]

    @property
    def dataplane(self) -> DataPlane:
        # type-ignore reason: Starlette's app.state is untyped (Any); the lifespan sets dataplane
        return self.state.dataplane  # type: ignore[no-any-return]

    # ------------------------------------------------------------------- server
    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Message:
        return pb.ServerReadyResponse(ready=self.dataplane.repository.ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Message:
        return pb.ServerMetadataResponse(
            name="resnet-serve", version=__version__, extensions=schema.EXTENSIONS
        )

    # ------------------------------------------------------------------- models
    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Message:
        try:
            model = resolve(self.dataplane.repository, request.name, request.version or None)
        except ServeError:  # as tritonclient.http: an unknown model or version is "not ready"
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=model.ready)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Message:
        repository = self.dataplane.repository
        metadata = schema.model_metadata(resolve(repository, request.name, request.version or None))
        metadata["versions"] = repository.served_versions(request.name)  # as HTTP: every one
        return grpc_codec.model_metadata(metadata)

    async def model_config(self, request: pb.ModelConfigRequest, context: Context) -> Message:
        repository = self.dataplane.repository
        model = resolve(repository, request.name, request.version or None)
        config = schema.model_config(
            model, self.settings.request_timeout_ms, repository.served_versions(request.name)
        )
        return grpc_codec.model_config(config)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> Message:
        repository = self.dataplane.repository
        if request.name:
            models = [resolve(repository, request.name, request.version or None)]
        else:
            models = repository.all_served()
        return grpc_codec.model_statistics([schema.model_statistics(m) for m in models])

    # ------------------------------------------------------------------- inference
    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> Message:
        dataplane = self.dataplane
        model = resolve(dataplane.repository, request.model_name, request.model_version or None)
        with recorded(model.telemetry, ENDPOINT):
            req = grpc_codec.parse_request(request)
            deadline = dataplane.deadline(self._timeout_ms(req.timeout_us, context))
            wanted = requested_outputs(req)
            model.require_ready()
            try:
                batch = await input_batch(dataplane, model, req)  # decodes image_bytes
                logits = await dataplane.infer(model, batch, deadline)
            except asyncio.CancelledError:  # grpc cancels the call at its deadline too
                left = context.time_remaining()
                if left is None or left > 0:
                    raise  # the client cancelled: counted as 499
                model.telemetry.rejected("deadline")
                raise DeadlineExceeded(
                    "the call's deadline passed before its result was ready"
                ) from None
            return grpc_codec.encode_response(
                model.name,
                model.config.version,
                req.id or request_id(),  # none in the message: the call's x-request-id
                output_tensors(model, logits, wanted),
            )

    @staticmethod
    def _timeout_ms(timeout_us: float | None, context: Context) -> float | None:
        """The call's deadline and the request's `timeout` parameter, whichever is sooner
        (DataPlane.deadline caps it by the server's)."""
        candidates = []
        left = context.time_remaining()
        if left is not None:
            if left <= 0:
                raise DeadlineExceeded("the call's deadline passed before the request was read")
            candidates.append(left * 1000.0)
        if timeout_us is not None:
            candidates.append(timeout_us / 1000.0)
        return min(candidates) if candidates else None

    # ------------------------------------------------------------------- repository
    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> Message:
        repository = self.dataplane.repository
        self._check_repository_name(request.repository_name)
        entries = repository.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e["name"],
                    version=e.get("version", ""),
                    state=e.get("state", ""),
                    reason=e.get("reason", ""),
                )
                for e in entries
            ]
        )

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> Message:
        self._check_repository_name(request.repository_name)
        refuse_load_parameters(request.parameters.keys())
        await self.dataplane.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> Message:
        self._check_repository_name(request.repository_name)
        await self.dataplane.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------------- trace extension
    async def trace_setting(self, request: pb.TraceSettingRequest, context: Context) -> Message:
        """Triton's trace extension (app/api/http/trace.py over HTTP): a call with no setting
        reads them (tritonclient's get_trace_settings), one with settings changes them; a
        setting with no value clears it."""
        traces = self.observer.trace_settings
        model = request.model_name or None
        if model is not None:
            resolve(self.dataplane.repository, model, None)  # 404 for a model not served
        if not request.settings:
            current = traces.get(model)
        else:
            check_changeable(self.settings)
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
    observer = service.observer
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            observed(name, _guarded(name, getattr(service, attr), secret), observer),
            request_deserializer=cls.FromString,
            response_serializer=_serialize,
        )
        for name, (attr, cls) in METHODS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def max_message_bytes(settings: Settings) -> int:
    return settings.grpc_max_message_bytes or settings.max_body_bytes


async def start(settings: Settings, state: Any) -> grpc.aio.Server | None:
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
    server.add_generic_rpc_handlers(
        (handler(InferenceService(settings, state), settings.auth_token),)
    )
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
