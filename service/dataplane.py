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
from service.observability.logs import note_model
from service.protocols.explain import ExplainCodec
from service.registry import Registry
from service.repository import Repository
from service.settings import Settings

if TYPE_CHECKING:
    from service.monitor import Monitor
    from service.observability.metrics import Metrics
    from service.shadow import ShadowScorer

# Requests of this many bytes or more are decoded and encoded on a worker thread, so the event
# loop keeps serving others while a large body is parsed.
OFFLOAD_BYTES = 64 * 1024

RequestT = TypeVar("RequestT", contravariant=True)
DecodedT = TypeVar("DecodedT")
AnswerT = TypeVar("AnswerT", covariant=True)


class Codec(Protocol, Generic[RequestT, DecodedT, AnswerT]):
    """A protocol's request and answer formats, with no transport code."""

    protocol: ClassVar[str]  # the metrics label: predict, v2, tfserving, grpc, explain
    # A codec may also set ``explains = True``: its encoding is heavy (explanations), so it
    # always runs on a worker thread, and a shadow version never scores its rows.
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
        self,
        repository: Repository,
        settings: Settings,
        sink: Metrics | None,
        admission: Admission,
        shadow: ShadowScorer | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.sink = sink
        self.admission = admission
        self.shadow = shadow  # scores a shadow version's rows after the answer; None: no shadows
        self.monitor = monitor if monitor is not None and monitor.enabled else None
        self.max_rows = settings.max_batch_rows
        self.max_body_bytes = settings.max_body_bytes
        self.explain = ExplainCodec(settings.max_explain_rows, settings.explain_evaluations)

    # -- lookup -----------------------------------------------------------------------------
    def registry(self, name: str | None = None) -> Registry:
        """The model ``name`` (None: the default model), or 404 listing the models served."""
        repository = self.repository
        if name is None:
            return repository.default()
        return repository.models.get(name) or repository.get(name)

    def check_name(self, name: str) -> str:
        """``name`` if it is a served model, or 404 listing the models served."""
        self.repository.get(name)
        return name

    def model(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The served version of ``name`` (None: the default model), or the loaded ``version``."""
        registry = self.registry(name)
        return _named(registry, version, None) or registry.require()

    def ready(self) -> list[Registry]:
        """Every served model, or :class:`ModelNotReady` (503) with the reason."""
        return self.repository.ready()

    def is_ready(self) -> bool:
        try:
            self.repository.ready()
        except ServiceError:
            return False
        return True

    def loaded_versions(self, name: str) -> list[int]:
        """Every version of ``name`` answerable by number, highest first."""
        return sorted(self.repository.get(name).loaded_models(), reverse=True)

    def _route(
        self, name: str | None, version: str | None, label: str | None
    ) -> tuple[LoadedModel, LoadedModel | None]:
        """The version that answers, and the shadow that should score the same rows (only
        unversioned requests are split between stable and canary, and shadowed)."""
        registry = self.registry(name)
        try:
            named = _named(registry, version, label)
            if named is not None:
                return named, None
            model = registry.route()
        except ServiceError:
            note_model(registry.name)  # for the access line: the model asked for
            raise
        if registry.routing.shadow is None or self.shadow is None:
            return model, None
        return model, registry.shadow_of(model)

    # -- inference --------------------------------------------------------------------------
    async def infer(
        self,
        codec: Codec[RequestT, Any, AnswerT],
        request: RequestT,
        name: str | None,
        version: str | None,
        size: int,
        label: str | None = None,
    ) -> AnswerT:
        """Look the model up (by name and version or label; unversioned requests by the
        model's labels and traffic), decode, predict and encode; ``size`` (bytes) decides
        whether decoding and encoding run on a worker thread. One version answers the whole
        request; a shadow version scores its rows after the answer."""
        started = time.perf_counter()
        status = 500  # a bug, unless an answer or a ServiceError says otherwise
        model_name, model_version = "", 0
        model = decoded = probabilities = error = None
        try:
            model, shadow = self._route(name, version, label)
            model_name, model_version = model.name, model.version
            note_model(model_name, model_version)
            explains = getattr(codec, "explains", False)
            big = size >= OFFLOAD_BYTES or explains
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
            if shadow is not None and not explains:
                self.shadow.submit(model, shadow, decoded.x, probabilities)  # type: ignore[union-attr]
            return answer
        except ServiceError as exc:
            status, error = exc.status_code, exc.message
            raise
        except asyncio.CancelledError:  # REQUEST_TIMEOUT_SECONDS, or the client went away
            status, error = 499, "cancelled: the client went away or the request timed out"
            raise
        finally:
            seconds = time.perf_counter() - started
            if self.sink is not None:
                self.sink.observe_inference(
                    model_name, model_version, codec.protocol, status, seconds
                )
            if self.monitor is not None:
                self.monitor.observe(
                    model,
                    model_name or name or "",
                    getattr(decoded, "x", None),
                    probabilities,
                    getattr(decoded, "notes", None),
                    codec.protocol,
                    status,
                    seconds,
                    error,
                )

    async def predict(self, model: LoadedModel, x: np.ndarray) -> np.ndarray:
        """Probabilities for a validated matrix, counted by label and out-of-range feature."""
        probabilities = await model.probabilities(x)
        if self.sink is not None:
            self.sink.observe_predictions(model, x, probabilities)
        return probabilities


def _named(registry: Registry, version: str | None, label: str | None) -> LoadedModel | None:
    """The version a label or a number in the path names; None for an unversioned request."""
    if label is not None:
        return registry.labelled(label)
    if version is not None:
        return registry.get(_version_number(registry, version))
    return None


def _version_number(registry: Registry, version: str) -> int:
    """A version path segment as a number, or 404 naming it."""
    if not (version.isascii() and version.isdigit()) or len(version) > 18:
        raise NotFound(f"version {version[:32]!r} of model {registry.name!r} not found")
    return int(version)
