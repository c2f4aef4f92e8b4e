"""The REST route table, in one place: every path, its endpoint and its OpenAPI description.

An operation with a versioned path is one endpoint bound to both paths. The ``POST`` inference
routes are *hot*: :class:`service.dispatch.ServiceApp` answers them without FastAPI's routing
layers (see there); every route stays registered with FastAPI, so the OpenAPI document and
the routing of everything else are FastAPI's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor

from service import schemas
from service.api import endpoints as e
from service.api import pages
from service.http import PlainRoute

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class _Segment(Convertor[str]):
    """A name or version in a TF Serving GET path: no ':', which starts a verb, so that
    /v1/models/m:predict matches only the :predict route (405 with Allow: POST for a GET)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", _Segment())


@dataclass
class Operation:
    """One operation: its paths (unversioned first), endpoint, method and documentation."""

    paths: tuple[str, ...]
    endpoint: Endpoint
    method: str = "GET"
    tag: str = "health"
    summary: str | None = None
    hot: bool = False  # a POST inference route, answered without FastAPI's routing layers
    # The route's name (default: the endpoint's), which FastAPI's operationId is made of; the
    # versioned path's is "version_" + this, without "model_". Clients generated from the
    # OpenAPI document name their methods after these: keep them.
    name: str | None = None
    version_summary: str | None = None  # the versioned path's, when it differs
    docs: dict[str, Any] = field(default_factory=dict)  # any other add_api_route argument


V2, TF = "open inference protocol (v2)", "tensorflow serving"
_V2_MODEL = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
_TF_MODEL = ("/v1/models/{name}", "/v1/models/{name}/versions/{version}")
_TF_GET = ("/v1/models/{name:segment}", "/v1/models/{name:segment}/versions/{version:segment}")
_LOOKUP = {"responses": schemas.LOOKUP_ERRORS}
_NOT_READY = {503: {"model": schemas.ErrorResponse, "description": "no verified model is loaded"}}


def _post(body: dict[str, Any], responses: dict[Any, Any] = schemas.STANDARD_ERRORS) -> dict:
    return {"responses": responses, "openapi_extra": {"requestBody": body}}


_PREDICT_DOCS = {
    "response_model": schemas.PredictResponse,
    **_post(
        schemas.PREDICT_BODY,
        {
            **schemas.ERROR_RESPONSES,
            404: {
                "model": schemas.ErrorResponse,
                "description": "no such model, version or label; or several models and no "
                "DEFAULT_MODEL",
            },
            200: {"content": {"text/csv": {}}, "description": "predictions"},
        },
    ),
}

_NO_BACKGROUND = {
    "model": schemas.ErrorResponse,
    "description": "an older bundle with categorical features and no background sample",
}
_EXPLAIN_DOCS = {
    "response_model": schemas.ExplainResponse,
    **_post(
        schemas.EXPLAIN_BODY,
        {
            **schemas.ERROR_RESPONSES,
            404: {"model": schemas.ErrorResponse, "description": "no such model or version"},
            409: _NO_BACKGROUND,
        },
    ),
}

# fmt: off
OPERATIONS = [
    Operation(("/predict",), e.predict, "POST", "predict",
              "Predict labels and per-class probabilities (the default model)", hot=True,
              docs=_PREDICT_DOCS),
    # The model repository: every model by name, version or label
    Operation(("/models",), e.models, tag="models",
              summary="Every served model: served and loaded versions, labels, traffic"),
    Operation(("/models/{name}",), e.named_model_card, tag="models",
              summary="One model's card: metadata, test metrics, versions, labels",
              docs=_LOOKUP),
    Operation(("/models/{name}/drift", "/models/{name}/versions/{version}/drift"), e.model_drift,
              tag="models", name="model_drift",
              summary="Feature drift of the served version: PSI per feature against training",
              version_summary="Feature drift of a loaded version", docs=_LOOKUP),
    Operation(("/models/{name}/predict", "/models/{name}/versions/{version}/predict"), e.predict,
              "POST", "models", "Predict with a model (its stable and canary split)", hot=True,
              name="model_predict", version_summary="Predict with a loaded version of a model",
              docs=_PREDICT_DOCS),
    Operation(("/models/{name}/labels/{label}/predict",), e.predict, "POST", "models",
              "Predict with the version a label names", hot=True, name="label_predict",
              docs=_PREDICT_DOCS),
    # Explanations: Shapley values per feature
    Operation(("/explain",), e.explain, "POST", "explain",
              "Explain predictions: each feature's Shapley value (the default model)",
              docs=_EXPLAIN_DOCS),
    Operation(("/models/{name}/explain", "/models/{name}/versions/{version}/explain"), e.explain,
              "POST", "explain", "Explain a model's predictions", name="model_explain",
              version_summary="Explain a loaded version's predictions", docs=_EXPLAIN_DOCS),
    Operation(("/models/{name}/labels/{label}/explain",), e.explain, "POST", "explain",
              "Explain the predictions of the version a label names", name="label_explain",
              docs=_EXPLAIN_DOCS),
    Operation(tuple(f"{p}:explain" for p in _TF_MODEL), e.v1_explain, "POST", "explain",
              "KServe V1 explain: answered as /explain", name="v1_explain",
              version_summary="KServe V1 explain with a loaded version",
              docs=_post(schemas.EXPLAIN_BODY, {**schemas.STANDARD_ERRORS, 409: _NO_BACKGROUND})),
    # Pages for people (not in the OpenAPI document): the model page and the API docs, whose
    # Swagger UI and ReDoc files the service serves itself (pages.mount_assets)
    Operation(("/",), pages.model_page, tag="pages", name="model_page",
              docs={"include_in_schema": False, "response_class": HTMLResponse}),
    Operation(("/docs",), pages.swagger_ui, tag="pages", name="swagger_ui",
              docs={"include_in_schema": False, "response_class": HTMLResponse}),
    Operation(("/docs/oauth2-redirect",), pages.swagger_ui_redirect, tag="pages",
              name="swagger_ui_redirect",
              docs={"include_in_schema": False, "response_class": HTMLResponse}),
    Operation(("/redoc",), pages.redoc, tag="pages", name="redoc",
              docs={"include_in_schema": False, "response_class": HTMLResponse}),
    Operation((pages.REDOC_JS,), pages.redoc_script, tag="pages", name="redoc_script",
              docs={"include_in_schema": False}),
    Operation(("/healthz",), e.healthz, summary="Liveness: the process answers",
              docs={"response_model": schemas.HealthResponse}),
    Operation(("/readyz",), e.readyz, summary="Readiness: a verified model is loaded",
              docs={"response_model": schemas.ReadyResponse, "responses": _NOT_READY}),
    Operation(("/model",), e.model_card,
              summary="The default model's card: metadata, test metrics, versions"),
    Operation(("/metrics",), e.metrics,
              summary="Prometheus metrics: requests, latency, predictions, batches, model version",
              docs={"response_class": Response, "responses": {
                  200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}}}),
    # The Open Inference Protocol (V2)
    Operation(("/v2",), e.v2_server_metadata, tag=V2, summary="Server metadata",
              name="server_metadata"),
    Operation(("/v2/health/live",), e.v2_server_live, tag=V2, summary="Server liveness",
              name="server_live"),
    Operation(("/v2/health/ready",), e.v2_server_ready, tag=V2, name="server_ready",
              summary="Server readiness: a verified model is loaded",
              docs={"responses": {503: schemas.STANDARD_ERRORS[503]}}),
    Operation(_V2_MODEL, e.v2_model_metadata, tag=V2, summary="Model metadata", name="metadata",
              docs=_LOOKUP),
    Operation(tuple(f"{p}/ready" for p in _V2_MODEL), e.v2_model_ready, tag=V2,
              summary="Model readiness", name="model_ready", docs=_LOOKUP),
    Operation(tuple(f"{p}/infer" for p in _V2_MODEL), e.v2_infer, "POST", V2,
              "Inference: probabilities and decoded labels", hot=True, name="infer",
              version_summary="Inference on a loaded version",
              docs=_post(schemas.V2_INFER_BODY, schemas.V2_INFER_RESPONSES)),
    # TensorFlow Serving REST
    Operation(_TF_GET, e.tf_status, tag=TF, summary="Model status", name="status", docs=_LOOKUP),
    Operation(tuple(f"{p}/metadata" for p in _TF_GET), e.tf_metadata, tag=TF,
              summary="Model metadata", name="metadata", docs=_LOOKUP),
    Operation(tuple(f"{p}:predict" for p in _TF_MODEL), e.tf_predict, "POST", TF,
              "Predict (row or columnar format)", hot=True, name="predict",
              version_summary="Predict with a loaded version",
              docs=_post(schemas.TF_PREDICT_BODY)),
    Operation(tuple(f"{p}:classify" for p in _TF_MODEL), e.tf_classify, "POST", TF,
              "Classify examples: every class with its score", hot=True, name="classify",
              version_summary="Classify examples with a loaded version",
              docs=_post(schemas.TF_CLASSIFY_BODY)),
    Operation(("/v1/models/{name}/labels/{label}:predict",), e.tf_predict, "POST", TF,
              "Predict with the version a label names", hot=True, name="label_predict",
              docs=_post(schemas.TF_PREDICT_BODY)),
    Operation(("/v1/models/{name}/labels/{label}:classify",), e.tf_classify, "POST", TF,
              "Classify examples with the version a label names", hot=True, name="label_classify",
              docs=_post(schemas.TF_CLASSIFY_BODY)),
    # Not in the OpenAPI document: it only tells a TF Serving client that this model classifies.
    Operation(("/v1/models/{name}:regress",), e.tf_regress, "POST", TF, name="regress",
              docs={"responses": schemas.STANDARD_ERRORS, "include_in_schema": False}),
]
# fmt: on


def _path_parameters(path: str) -> list[dict[str, Any]]:
    """The path's parameters as FastAPI documents a ``name: str`` argument."""
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "title": name.title()},
        }
        for name in re.findall(r"{(\w+)(?::\w+)?}", path)
    ]


def add_routes(app: FastAPI) -> list[APIRoute]:
    """Register every operation on the app's own router (matching through an included router
    costs ~10 us a request more); return the hot routes."""
    hot = []
    for operation in OPERATIONS:
        name = operation.name or operation.endpoint.__name__
        for index, path in enumerate(operation.paths):
            docs = dict(operation.docs)
            parameters = _path_parameters(path)
            if parameters:
                docs["openapi_extra"] = {**docs.get("openapi_extra", {}), "parameters": parameters}
            app.router.add_api_route(
                path,
                operation.endpoint,
                methods=[operation.method],
                route_class_override=PlainRoute,
                tags=[operation.tag],
                summary=(index and operation.version_summary) or operation.summary,
                name=f"version_{name.removeprefix('model_')}" if index else name,
                **docs,
            )
            if operation.hot:
                hot.append(app.router.routes[-1])
    pages.mount_assets(app)
    return hot  # type: ignore[return-value]
