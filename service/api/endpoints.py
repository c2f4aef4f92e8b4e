"""The REST endpoints: one per operation, thin over the data plane (``request.app.state.plane``).

Each takes the ``Request`` and returns a ``Response`` (:class:`service.http.PlainRoute` calls
it as is); path parameters come from ``request.path_params``, so one endpoint serves both the
unversioned and the versioned path of an operation. The route table is ``service.api.routes``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from service.dataplane import Codec, DataPlane
from service.errors import InvalidInput
from service.http import (
    JSONBytes,
    check_bearer,
    check_json_media,
    content_kind,
    header,
    read_body,
    wants_csv,
)
from service.monitor import drift_tracker
from service.observability.metrics import get_metrics
from service.protocols import tfserving, v2
from service.protocols.common import Answer
from service.protocols.explain import ExplainRequest
from service.protocols.predict import PREDICT, PredictRequest
from service.registry import Registry


def _plane(request: Request) -> DataPlane:
    return request.app.state.plane


def _check_api_key(request: Request) -> None:
    """Prediction routes need ``Authorization: Bearer $API_KEY`` when API_KEY is set."""
    check_bearer(request, request.app.state.settings.api_key, "this prediction route (API_KEY)")


def _respond(answer: Answer) -> Response:
    return Response(answer.body, media_type=answer.media_type, headers=answer.headers)


# -- inference ----------------------------------------------------------------------------------
async def predict(request: Request) -> Response:
    """Rows (feature order), records (feature names) or CSV with a header row.

    Each prediction has the decoded label, every class's probability and warnings for
    features outside the training range. ``Accept: text/csv`` answers CSV.
    """
    _check_api_key(request)
    plane = _plane(request)
    kind = content_kind(request)
    body = await read_body(request, plane.max_body_bytes)
    call = PredictRequest(body, kind, wants_csv(request))  # type: ignore[arg-type]
    params = request.path_params  # none on /predict: the default model
    name = params.get("name")
    if name is not None:
        plane.check_name(name)
    return _respond(
        await plane.infer(
            PREDICT, call, name, params.get("version"), len(body), params.get("label")
        )
    )


async def explain(request: Request) -> Response:
    """``/predict``'s body (``"classes": "all"`` in it or in the query string: every class's);
    per row, the Shapley value of each feature for the predicted label's probability."""
    _check_api_key(request)
    plane = _plane(request)
    kind = content_kind(request)
    body = await read_body(request, plane.max_body_bytes)
    call = ExplainRequest(body, kind, request.query_params.get("classes"))  # type: ignore[arg-type]
    params = request.path_params
    name = params.get("name")
    if name is not None:
        plane.check_name(name)
    return _respond(
        await plane.infer(
            plane.explain, call, name, params.get("version"), len(body), params.get("label")
        )
    )


async def v1_explain(request: Request) -> Response:
    """KServe V1 ``:explain``: ``{"instances": [...]}`` answered as ``/explain`` answers."""
    plane, name, version, body = await _standard_body(request)
    call = ExplainRequest(body, "json", request.query_params.get("classes"))
    return _respond(await plane.infer(plane.explain, call, name, version, len(body)))


async def _standard_body(request: Request) -> tuple[DataPlane, str, str | None, bytes]:
    """What a standard protocol's POST starts with: the key, the model name, the media type
    and the body, checked in that order; then the name and the version of the path (a
    label's path has no version)."""
    _check_api_key(request)
    plane = _plane(request)
    params = request.path_params
    name = plane.check_name(params["name"])
    check_json_media(request)
    body = await read_body(request, plane.max_body_bytes)
    return plane, name, params.get("version"), body


async def v2_infer(request: Request) -> Response:
    """Input ``features`` (FP32 ``[N, n_features]``) or one input per feature, JSON or binary;
    outputs ``probabilities`` (FP32 ``[N, n_classes]``) and ``label`` (BYTES ``[N]``)."""
    plane, name, version, body = await _standard_body(request)
    call = v2.InferBody(name, body, header(request, b"inference-header-content-length"))
    return _respond(await plane.infer(v2.INFER, call, name, version, len(body)))


async def _tf(request: Request, codec: Codec[bytes, Any, Answer]) -> Response:
    plane, name, version, body = await _standard_body(request)
    label = request.path_params.get("label")
    return _respond(await plane.infer(codec, body, name, version, len(body), label))


async def tf_predict(request: Request) -> Response:
    """``instances`` (rows, records or ``{"features": row}`` objects) answer ``predictions``, one
    ``{"probabilities", "label"}`` object per row; ``inputs`` answer ``outputs`` by name."""
    return await _tf(request, tfserving.PREDICT)


async def tf_classify(request: Request) -> Response:
    """``examples`` by feature name (optional shared ``context``) answer ``result``: per example,
    ``[label, score]`` for every class."""
    return await _tf(request, tfserving.CLASSIFY)


async def tf_regress(request: Request) -> Response:
    """Tells a TF Serving client that this model classifies."""
    _check_api_key(request)
    _plane(request).check_name(request.path_params["name"])
    raise InvalidInput("this model is a classifier: use :classify or :predict", 400)


# -- health, metadata ---------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    return JSONBytes({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when every served model has a verified version: the default model's version
    (when there is one) and every model's."""
    plane = _plane(request)
    models = [registry.require() for registry in plane.ready()]
    answer: dict[str, Any] = {"status": "ready"}
    default = plane.repository.default_or_none()
    model = default.served() if default is not None else None
    if model is not None:
        answer.update(model=model.name, version=model.version, runtime=model.runtime.name)
    answer["models"] = {m.name: m.version for m in models}
    return JSONBytes(answer)


def model_summary(registry: Registry) -> dict[str, Any]:
    """A model's name, readiness, served version, loaded versions, labels and traffic."""
    model = registry.served()
    serving = registry.serving
    summary: dict[str, Any] = {
        "name": registry.name,
        "ready": model is not None,
        "version": model.version if model else None,
        "runtime": model.runtime.name if model else None,
        "previous_version": registry.previous.version if registry.previous else None,
        "loaded_versions": sorted(registry.loaded_models(), reverse=True),
        "labels": dict(sorted(serving.labels.items())),
        "traffic": serving.model_dump(exclude={"labels"}),
    }
    if registry.serving_error is not None:
        summary["serving_error"] = registry.serving_error
    if registry.label_errors:
        summary["label_errors"] = registry.label_errors
    if model is None:
        summary["reason"] = registry.not_ready_reason()
    return summary


def model_card_of(registry: Registry) -> dict[str, Any]:
    """The summary, every version's state, and the served version's metadata and metrics."""
    card = model_summary(registry)
    card["versions"] = [
        {
            "version": s.version,
            "state": s.state,
            "reason": s.reason,
            "loaded": s.loaded,
            "labels": s.labels,
        }
        for s in registry.statuses()
    ]
    model = registry.served()
    if model is not None:
        card["metadata"] = model.metadata.model_dump(mode="json")
        card["metrics"] = model.report
        card["threshold"] = model.threshold
        card["missing_values"] = registry.settings.missing_values
        card["features"] = [
            feature.model_dump(exclude_none=True, exclude={"mean", "missing"})
            for feature in model.metadata.features
        ]
    return card


async def model_card(request: Request) -> Response:
    """The default model's card: metadata, test metrics and confusion matrix of the served
    version, and every version found."""
    return JSONBytes(model_card_of(_plane(request).registry()))


async def models(request: Request) -> Response:
    """Every served model: readiness, served and loaded versions, labels and traffic."""
    repository = _plane(request).repository
    default = repository.default_or_none()
    return JSONBytes(
        {
            "default_model": default.name if default is not None else None,
            "models": [model_summary(repository.get(name)) for name in repository.names()],
        }
    )


async def named_model_card(request: Request) -> Response:
    """One model's card, as ``GET /model`` gives the default model's."""
    return JSONBytes(model_card_of(_plane(request).registry(request.path_params["name"])))


async def model_drift(request: Request) -> Response:
    """Feature drift of a model's served (or a loaded) version: each feature's population
    stability index over its last DRIFT_WINDOW answered rows against training."""
    plane = _plane(request)
    params = request.path_params
    model = plane.model(plane.check_name(params["name"]), params.get("version"))
    answer: dict[str, Any] = {"model": model.name, "version": model.version}
    window = plane.settings.drift_window
    if model.metadata.distributions is None:
        answer["reason"] = (
            "this version's bundle has no training distributions (trained before drift "
            "tracking): train it again to track drift"
        )
    elif window == 0:
        answer["reason"] = "drift tracking is off (DRIFT_WINDOW=0)"
    else:
        tracker = drift_tracker(model, window)
        assert tracker is not None
        answer.update(tracker.report())
    return JSONBytes(answer)


async def metrics(request: Request) -> Response:
    body, content_type = get_metrics().render(header(request, b"accept"))
    return Response(body, media_type=content_type)


async def v2_server_metadata(request: Request) -> Response:
    return JSONBytes(v2.server_metadata(request.app.version))


async def v2_server_live(request: Request) -> Response:
    return JSONBytes({"live": True})


async def v2_server_ready(request: Request) -> Response:
    _plane(request).ready()
    return JSONBytes({"ready": True})


async def v2_model_metadata(request: Request) -> Response:
    """The inputs and both outputs, and the versions that can be asked for by path."""
    plane, params = _plane(request), request.path_params
    model = plane.model(params["name"], params.get("version"))
    return JSONBytes(
        v2.model_metadata(params["name"], model, plane.loaded_versions(params["name"]))
    )


async def v2_model_ready(request: Request) -> Response:
    params = request.path_params
    _plane(request).model(params["name"], params.get("version"))
    return JSONBytes({"name": params["name"], "ready": True})


async def tf_status(request: Request) -> Response:
    """Every loaded version of the model (the served one first), each AVAILABLE."""
    plane, params = _plane(request), request.path_params
    version = params.get("version")
    model = plane.model(params["name"], version)
    others = (
        []
        if version is not None
        else [v for v in plane.loaded_versions(params["name"]) if v != model.version]
    )
    return JSONBytes(tfserving.version_status([model.version, *others]))


async def tf_metadata(request: Request) -> Response:
    """The ``serving_default`` signature: its inputs, outputs ``probabilities`` and ``label``."""
    params = request.path_params
    model = _plane(request).model(params["name"], params.get("version"))
    return JSONBytes(tfserving.model_metadata(params["name"], model))
