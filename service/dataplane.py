"""One data plane for every protocol and transport: model lookup, limits, prediction, metrics.

Each protocol is a codec (``service.protocols``) that reads its request into the model's
feature matrix and writes the probabilities back in its own format; each transport (REST in
``service.api``, gRPC in ``service.grpc_api``) reads bytes off the wire, hands them to
:meth:`DataPlane.infer` with the codec, and sends the answer. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from anyio.to_thread import run_sync as to_thread

from service.errors import InvalidInput, NotFound, ServiceError
from service.model import LoadedModel
from service.observability.logs import note_model_version
from service.registry import Registry
from service.settings import Settings

if TYPE_CHECKING:
    from service.observability.metrics import Metrics

# Requests of this many bytes or more are decoded and encoded on a worker thread, so the event
# loop keeps serving others while a large body is parsed.
OFFLOAD_BYTES = 64 * 1024

RequestT = TypeVar("RequestT", contravariant=True)
DecodedT = TypeVar("DecodedT")
AnswerT = TypeVar("AnswerT", covariant=True)


class Codec(Protocol, Generic[RequestT, DecodedT, AnswerT]):
    """A protocol's request and answer formats, with no transport code."""

    protocol: ClassVar[str]  # the metrics label: predict, v2, tfserving, grpc
    # The status a request that does not fit the model gets: 422 on /predict; the standard
    # protocols (V2, TF Serving) answer 400, as their reference servers do.
    invalid_status: ClassVar[int]

    def decode(self, request: RequestT, model: LoadedModel, max_rows: int) -> DecodedT: ...

    def encode(
        self, request: RequestT, model: LoadedModel, decoded: DecodedT, probabilities: np.ndarray
    ) -> AnswerT: ...


class Admission:
    """Prediction requests in flight, across transports: at most ``limit`` (MAX_CONCURRENCY)."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0


class DataPlane:
    """The one core every protocol's endpoints call."""

    def __init__(
        self, registry: Registry, settings: Settings, sink: Metrics | None, admission: Admission
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.sink = sink
        self.admission = admission
        self.max_rows = settings.max_batch_rows
        self.max_body_bytes = settings.max_body_bytes

    # -- lookup -----------------------------------------------------------------------------
    def check_name(self, name: str) -> str:
        """The served model's name, or 404 when ``name`` is another model."""
        served = self.settings.model_name
        if name != served:
            raise NotFound(f"model {name[:64]!r} not found; this server serves {served!r}")
        return served

    def model(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The served model (no name: the default one), or the loaded ``version`` asked for."""
        if name is not None:
            self.check_name(name)
        if version is None:
            return self.registry.require()
        if not (version.isascii() and version.isdigit()) or len(version) > 18:
            raise NotFound(
                f"version {version[:32]!r} of model {self.settings.model_name!r} not found"
            )
        return self.registry.get(int(version))

    def ready(self) -> LoadedModel:
        """The served model, or :class:`ModelNotReady` (503) with the reason."""
        return self.registry.require()

    def loaded_versions(self) -> list[int]:
        """Every version answerable by number, highest first."""
        registry = self.registry
        return sorted(
            {m.version for m in (registry.current, registry.previous) if m is not None},
            reverse=True,
        )

    # -- inference --------------------------------------------------------------------------
    async def infer(
        self,
        codec: Codec[RequestT, Any, AnswerT],
        request: RequestT,
        name: str | None,
        version: str | None,
        size: int,
    ) -> AnswerT:
        """Look the model up, decode, predict and encode; ``size`` (bytes) decides whether
        decoding and encoding run on a worker thread. One version answers the whole request."""
        started = time.perf_counter()
        status = 500  # a bug, unless an answer or a ServiceError says otherwise
        try:
            model = self.model(name, version)
            big = size >= OFFLOAD_BYTES
            try:
                if big:
                    decoded = await to_thread(codec.decode, request, model, self.max_rows)
                else:
                    decoded = codec.decode(request, model, self.max_rows)
                probabilities = await self.predict(model, decoded.x)
            except InvalidInput as exc:
                if exc.status_code == 422 and codec.invalid_status != 422:
                    raise InvalidInput(exc.message, codec.invalid_status) from None
                raise
            if big:
                answer = await to_thread(codec.encode, request, model, decoded, probabilities)
            else:
                answer = codec.encode(request, model, decoded, probabilities)
            status = 200
            return answer
        except ServiceError as exc:
            status = exc.status_code
            raise
        except asyncio.CancelledError:  # REQUEST_TIMEOUT_SECONDS, or the client went away
            status = 499
            raise
        finally:
            if self.sink is not None:
                self.sink.observe_inference(codec.protocol, status, time.perf_counter() - started)

    async def predict(self, model: LoadedModel, x: np.ndarray) -> np.ndarray:
        """Probabilities for a validated matrix, counted by label and out-of-range feature."""
        probabilities = await model.probabilities(x)
        note_model_version(model.version)  # for the access line
        if self.sink is not None:
            self.sink.observe_predictions(model, x, probabilities)
        return probabilities
