"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) and the standard
``grpc.health.v1.Health`` service, on GRPC_PORT, in the same process and event loop as REST.

A thin transport: every call goes through the same data plane as REST (``service.dataplane``),
with the V2 codec (``service.protocols.v2``) behind a message conversion (:mod:`.codec`), so
gRPC answers what V2 REST answers. API_KEY is read from the ``authorization`` metadata;
MAX_BODY_BYTES is the message size limit; MAX_CONCURRENCY is shared with REST; errors are
status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.dataplane import DataPlane
from service.errors import ModelNotReady, Overloaded, ServiceError, Unauthorized
from service.grpc_api import codec
from service.grpc_api import grpc_predict_v2_pb2 as pb
from service.grpc_api import grpc_predict_v2_pb2_grpc as pb_grpc
from service.http import bearer_matches
from service.model import LoadedModel
from service.observability.logs import AccessLog, RequestContext, current_request
from service.observability.middleware import new_request_id
from service.protocols import v2
from service.settings import Settings

log = logging.getLogger("service.grpc")

SERVICE = "inference.GRPCInferenceService"
Code = grpc.StatusCode
# Our errors' HTTP statuses as gRPC status codes.
STATUS_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    404: Code.NOT_FOUND,
    409: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.INVALID_ARGUMENT,
    422: Code.INVALID_ARGUMENT,
    503: Code.UNAVAILABLE,
}


class InferCodec:
    """A ModelInferRequest to the V2 document, read by the V2 codec; the answer back."""

    protocol: ClassVar[str] = "grpc"
    invalid_status: ClassVar[int] = 400

    def decode(
        self, request: pb.ModelInferRequest, model: LoadedModel, max_rows: int
    ) -> v2.InferRequest:
        if len(request.inputs) > model.n_features:  # refused before converting them all
            v2.refuse_input_count(len(request.inputs), model)
        document, binary = codec.request_to_document(request)
        return v2.read_document(document, binary, model, max_rows)

    def encode(
        self,
        request: pb.ModelInferRequest,
        model: LoadedModel,
        parsed: v2.InferRequest,
        probabilities: Any,
    ) -> pb.ModelInferResponse:
        answer, chunks = v2.answer_parts(request.model_name, model, parsed, probabilities)
        return codec.response_from_answer(answer, chunks)


INFER = InferCodec()


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _rpc(method: str) -> Callable[..., Any]:
    """Wrap a servicer method: request id, access line, and our errors as status codes."""
    route = f"/{SERVICE}/{method}"

    def wrap(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(self: InferenceServicer, request: Any, context: Any) -> Any:
            started = time.perf_counter()
            request_id = new_request_id(_metadata(context, "x-request-id"))
            token = current_request.set(state := RequestContext(request_id))
            status, code = 200, Code.OK
            try:
                context.set_trailing_metadata((("x-request-id", request_id),))
                return await handler(self, request, context)
            except ServiceError as exc:
                status = exc.status_code
                code = STATUS_CODES.get(status, Code.INTERNAL)
                await context.abort(code, exc.message)
            except asyncio.CancelledError:  # the client went away
                status, code = 499, Code.CANCELLED
                raise
            except Exception:  # a bug: grpc answers INTERNAL
                status, code = 500, Code.INTERNAL
                raise
            finally:
                current_request.reset(token)
                seconds = time.perf_counter() - started
                if self.sink is not None:
                    self.sink.observe_grpc(method, code.name, seconds)
                if self.access_log.enabled():
                    self.access_log.write(
                        request_id, "GRPC", route, route, status, seconds, state.model_version
                    )

        return call

    return wrap


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over the data plane."""

    def __init__(self, plane: DataPlane, server_version: str) -> None:
        self.plane = plane
        self.settings: Settings = plane.settings
        self.server_version = server_version
        self.access_log = AccessLog()
        self.sink = plane.sink
        # Messages, not exceptions: an exception raised twice keeps every raise's frames (and
        # so each refused request) in its traceback.
        self._busy = (
            f"{plane.admission.limit} prediction requests are in flight (MAX_CONCURRENCY); "
            "retry shortly"
        )
        self._slow = (
            f"the prediction took longer than REQUEST_TIMEOUT_SECONDS="
            f"{self.settings.request_timeout_seconds:g}; retry shortly"
        )

    @_rpc("ServerLive")
    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc("ServerReady")
    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.registry.current is not None)

    @_rpc("ModelReady")
    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        try:
            self.plane.model(request.name, request.version or None)
        except ModelNotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc("ServerMetadata")
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return codec.server_metadata_response(v2.server_metadata(self.server_version))

    @_rpc("ModelMetadata")
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        plane = self.plane
        model = plane.model(request.name, request.version or None)
        return codec.metadata_response(
            v2.model_metadata(request.name, model, plane.loaded_versions())
        )

    @_rpc("ModelInfer")
    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        key = self.settings.api_key
        if key is not None and not bearer_matches(_metadata(context, "authorization") or "", key):
            raise Unauthorized("missing or wrong bearer token for ModelInfer (API_KEY)")
        plane = self.plane
        admission = plane.admission
        sink = plane.sink
        if admission.in_flight >= admission.limit:
            if sink is not None:
                sink.overload.labels("concurrency").inc()
            raise Overloaded(self._busy)
        admission.in_flight += 1
        if sink is not None:
            sink.prediction_started()
        try:
            async with asyncio.timeout(self.settings.request_timeout_seconds):
                return await plane.infer(
                    INFER,
                    request,
                    request.model_name,
                    request.model_version or None,
                    request.ByteSize(),
                )
        except TimeoutError:
            if sink is not None:
                sink.overload.labels("timeout").inc()
            raise Overloaded(self._slow) from None
        finally:
            admission.in_flight -= 1
            if sink is not None:
                sink.prediction_ended()


class HealthServicer(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health``: SERVING while a verified model is loaded, for the whole
    server ("") and for the inference service; no credentials needed (Kubernetes probes)."""

    WATCH_SECONDS = 1.0

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.draining = False

    def _status(self, service: str) -> int | None:
        if service not in ("", SERVICE):
            return None
        serving = not self.draining and self.plane.registry.current is not None
        response = health_pb2.HealthCheckResponse
        return response.SERVING if serving else response.NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        status = self._status(request.service)
        if status is None:
            await context.abort(Code.NOT_FOUND, f"unknown service {request.service[:64]!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if self.draining:  # NOT_SERVING was sent: end the stream, or it holds shutdown
                return
            await asyncio.sleep(self.WATCH_SECONDS)


def grpc_address(host: str, port: int) -> str:
    """``host:port`` as gRPC reads it: an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """The gRPC server of one worker: started and stopped by the app's lifespan."""

    def __init__(self, plane: DataPlane, server_version: str) -> None:
        settings = plane.settings
        self.address = grpc_address(settings.host, settings.grpc_port)
        self.health = HealthServicer(plane)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                # Workers share the port (the kernel spreads connections); a single process
                # must own it, so that a port taken by another program is an error at start.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(plane, server_version), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._stopping: asyncio.Task[None] | None = None
        self.on_stop: Callable[[], None] | None = None  # called once stopped

    async def start(self) -> None:
        try:
            port = self.server.add_insecure_port(self.address)
        except RuntimeError:
            port = 0
        if not port:
            raise RuntimeError(
                f"cannot listen for gRPC on {self.address}: the port is in use or the address "
                "is not local; set GRPC_PORT to a free port, or 0 to turn gRPC off"
            )
        await self.server.start()
        log.info("gRPC (Open Inference Protocol) listening on %s", self.address)

    def begin_drain(self, grace: float) -> None:
        """Refuse new calls and let those in flight finish within ``grace`` seconds (SIGTERM)."""
        if self._stopping is None:
            log.info("draining gRPC calls in flight (up to %g s)", grace)
            self.health.draining = True
            self._stopping = asyncio.get_running_loop().create_task(self.server.stop(grace))

    async def stop(self, grace: float) -> None:
        self.begin_drain(grace)
        assert self._stopping is not None
        await self._stopping
        if self.on_stop is not None:
            self.on_stop()
