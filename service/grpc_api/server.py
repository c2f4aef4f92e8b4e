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
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import inputs, typed
from service.dataplane import OFFLOAD_BYTES, DataPlane
from service.errors import ModelNotReady, Overloaded, ServiceError, Unauthorized
from service.grpc_api import codec
from service.grpc_api import grpc_predict_v2_pb2 as pb
from service.grpc_api import grpc_predict_v2_pb2_grpc as pb_grpc
from service.http import bearer_matches
from service.model import LoadedModel
from service.observability.logs import AccessLog, RequestContext, current_request
from service.observability.middleware import new_request_id
from service.protocols import v2
from service.protocols.common import INPUT_NAME, OUTPUT_NAMES
from service.settings import Settings

log = logging.getLogger("service.grpc")

SERVICE = "inference.GRPCInferenceService"
Code = grpc.StatusCode
_CODE_NAMES = {code: code.name for code in Code}  # an enum's name is a property: slow
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


# The outputs a request that names none gets: every output, as binary data (always, over gRPC).
_EVERY_OUTPUT = [(name, True) for name in OUTPUT_NAMES]
_FP32 = np.dtype("<f4")


class InferCodec:
    """A ModelInferRequest to the V2 document, read by the V2 codec; the answer back.

    The common request (what tritonclient sends: one FP32 ``features`` tensor in
    raw_input_contents, no parameters, no outputs named, for a numeric model) is read straight
    from its bytes with the V2 parser's checks (finite, within ±MAX_ABS_VALUE, the shape, the
    size); anything else, and any value those checks would refuse, takes the general path (the
    document, read by the V2 parser), which gives the errors. The answer is built straight from
    the probabilities, as :func:`codec.response_from_answer` builds it from the V2 answer."""

    protocol: ClassVar[str] = "grpc"
    invalid_status: ClassVar[int] = 400

    def decode(
        self, request: pb.ModelInferRequest, model: LoadedModel, max_rows: int
    ) -> v2.InferRequest:
        x = self._common_matrix(request, model, max_rows)
        if x is not None:
            return v2.InferRequest(
                x=x, id=request.id or str(uuid.uuid4()), outputs=list(_EVERY_OUTPUT)
            )
        if len(request.inputs) > model.n_features:  # refused before converting them all
            v2.refuse_input_count(len(request.inputs), model)
        document, binary = codec.request_to_document(request)
        return v2.read_document(document, binary, model, max_rows)

    @staticmethod
    def _common_matrix(
        request: pb.ModelInferRequest, model: LoadedModel, max_rows: int
    ) -> np.ndarray | None:
        """The matrix of the common request, or None: not that request, or a value, shape or
        size the general path must judge (and name)."""
        if request.parameters or request.outputs or len(request.inputs) != 1:
            return None
        raw = request.raw_input_contents
        if len(raw) != 1 or not model.numeric_only or INPUT_NAME in model.feature_names:
            return None
        tensor = request.inputs[0]
        if (
            tensor.name != INPUT_NAME
            or tensor.datatype != "FP32"
            or tensor.parameters
            or tensor.HasField("contents")
        ):
            return None
        shape = tensor.shape
        width = model.n_features
        if len(shape) != 2 or shape[1] != width:
            return None
        rows = shape[0]
        data = raw[0]
        if not 0 < rows <= max_rows or len(data) != rows * width * 4:
            return None
        values = np.frombuffer(data, dtype=_FP32)
        if rows <= inputs.SMALL_ROWS:  # the V2 parser's own checks (inputs._to_matrix's)
            if not inputs.plain_numbers((values.tolist(),)):
                return None
        elif typed.bounded_array(values) is None:
            return None
        return values.reshape(rows, width).astype(np.float32)  # a copy: writable, aligned

    def encode(
        self,
        request: pb.ModelInferRequest,
        model: LoadedModel,
        parsed: v2.InferRequest,
        probabilities: Any,
    ) -> pb.ModelInferResponse:
        if not all(binary for _, binary in parsed.outputs):  # never over gRPC: as REST would
            answer, chunks = v2.answer_parts(request.model_name, model, parsed, probabilities)
            return codec.response_from_answer(answer, chunks)
        # What v2.answer_parts then codec.response_from_answer give, without the V2 answer.
        probabilities = np.asarray(probabilities, dtype=_FP32)  # as answer_parts sends them
        rows, classes = probabilities.shape
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=str(model.version), id=parsed.id
        )
        add = response.outputs.add
        chunks = []
        for name, _ in parsed.outputs:
            if name == "probabilities":
                add(name=name, datatype="FP32", shape=(rows, classes))
                chunks.append(probabilities.tobytes())
            else:
                add(name=name, datatype="BYTES", shape=(rows,))
                chunks.append(v2.label_bytes(model, probabilities))
        response.raw_output_contents.extend(chunks)
        return response


INFER = InferCodec()


class TimedInfer(InferCodec):
    """:class:`InferCodec` for a request decoded on the event loop, under an
    ``asyncio.timeout`` that has no deadline yet: REQUEST_TIMEOUT_SECONDS can only fire at an
    await point, and the data plane's one await point then is the model's batcher. The deadline
    (from the call's start) is set when the data plane hands over the model it uses, if that
    model has a batcher; with none, nothing awaits and no timer is scheduled."""

    __slots__ = ("deadline", "timeout")

    def __init__(self, timeout: asyncio.Timeout, deadline: float) -> None:
        self.timeout = timeout
        self.deadline = deadline

    def decode(
        self, request: pb.ModelInferRequest, model: LoadedModel, max_rows: int
    ) -> v2.InferRequest:
        if model.batcher is not None:
            self.timeout.reschedule(self.deadline)
        return super().decode(request, model, max_rows)


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
                    self.sink.observe_grpc(method, _CODE_NAMES[code], seconds)
                if self.access_log.enabled():
                    self.access_log.write(
                        request_id,
                        "GRPC",
                        route,
                        route,
                        status,
                        seconds,
                        state.model_version,
                        state.model_name,
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
        return pb.ServerReadyResponse(ready=self.plane.is_ready())

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
            v2.model_metadata(request.name, model, plane.loaded_versions(request.name))
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
            size = request.ByteSize()
            seconds = self.settings.request_timeout_seconds
            if size >= OFFLOAD_BYTES:  # decoded on a worker thread: awaited
                async with asyncio.timeout(seconds):
                    return await plane.infer(
                        INFER, request, request.model_name, request.model_version or None, size
                    )
            # Decoded and encoded on the event loop: the one await point is a batcher's, if the
            # model the data plane uses has one (TimedInfer.decode sets the deadline then).
            async with asyncio.timeout(None) as timeout:
                return await plane.infer(
                    TimedInfer(timeout, asyncio.get_running_loop().time() + seconds),
                    request,
                    request.model_name,
                    request.model_version or None,
                    size,
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
        self._drain_started: asyncio.Event | None = None  # made on the server's loop

    def begin_drain(self) -> None:
        """NOT_SERVING from now on; open Watch streams hear it at once (not at their next look)
        and end, so that none holds the drain."""
        self.draining = True
        if self._drain_started is not None:
            self._drain_started.set()

    def _status(self, service: str) -> int | None:
        if service not in ("", SERVICE):
            return None
        serving = not self.draining and self.plane.is_ready()
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
            if self._drain_started is None:
                self._drain_started = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_started.wait(), self.WATCH_SECONDS)


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
            self.health.begin_drain()
            self._stopping = asyncio.get_running_loop().create_task(self.server.stop(grace))

    async def stop(self, grace: float) -> None:
        self.begin_drain(grace)
        assert self._stopping is not None
        await self._stopping
        if self.on_stop is not None:
            self.on_stop()
