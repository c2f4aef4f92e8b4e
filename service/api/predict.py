"""``POST /predict``: JSON rows, JSON records or CSV in; JSON or CSV out."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response

from service import inputs, outputs
from service.api.deps import check_api_key
from service.http import PlainRoute, content_kind, read_body, wants_csv
from service.model import LoadedModel
from service.schemas import ERROR_RESPONSES, IRIS_ROW, PredictResponse

# Bodies above this are parsed and rendered on a worker thread so the event loop keeps serving.
OFFLOAD_BYTES = 64 * 1024

REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/PredictRequest"},
            "examples": {
                "rows": {"summary": "rows in feature order", "value": {"instances": [IRIS_ROW]}},
                "records": {
                    "summary": "records by feature name",
                    "value": {
                        "instances": [
                            {
                                "sepal_length": 5.1,
                                "sepal_width": 3.5,
                                "petal_length": 1.4,
                                "petal_width": 0.2,
                            }
                        ],
                        "top_k": 2,
                    },
                },
            },
        },
        "text/csv": {
            "schema": {"$ref": "#/components/schemas/PredictCSV"},
            "example": "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n",
        },
    },
}


def parse(body: bytes, kind: str, model: LoadedModel, max_rows: int) -> inputs.Parsed:
    schema = inputs.Schema(
        model.feature_names, max_rows, model.n_classes, model.typed, model.ignored_columns
    )
    if kind == "csv":
        return inputs.parse_csv_body(body, schema)
    return inputs.parse_json_body(body, schema)


def render(
    model: LoadedModel, parsed: inputs.Parsed, probabilities: Any, csv_out: bool
) -> Response:
    if csv_out:
        return Response(
            outputs.predictions_csv(model, parsed.x, probabilities, parsed.notes),
            media_type="text/csv",
            headers={"X-Model-Version": str(model.version)},
        )
    return Response(
        outputs.answer_json(model, parsed.x, probabilities, parsed.top_k, parsed.notes),
        media_type="application/json",
    )


async def predict(request: Request) -> Response:
    """Rows (feature order), records (feature names) or CSV with a header row.

    Each prediction has the decoded label, every class's probability and warnings for
    features outside the training range. ``Accept: text/csv`` answers CSV.
    """
    check_api_key(request)  # a plain call: a FastAPI dependency costs more than the check
    state = request.app.state
    kind = content_kind(request)
    body = await read_body(request, state.settings.max_body_bytes)
    model = state.registry.require()  # one version answers the whole request
    max_rows = state.settings.max_batch_rows
    csv_out = wants_csv(request)
    if len(body) < OFFLOAD_BYTES:
        parsed = parse(body, kind, model, max_rows)
        probabilities = await model.probabilities(parsed.x)
        return render(model, parsed, probabilities, csv_out)
    parsed = await anyio.to_thread.run_sync(parse, body, kind, model, max_rows)
    probabilities = await model.probabilities(parsed.x)
    return await anyio.to_thread.run_sync(render, model, parsed, probabilities, csv_out)


def add_route(app: FastAPI) -> None:
    """Register ``POST /predict`` on the app's own router, not through an included one.

    Requests are matched against the routes in order, and FastAPI includes a router lazily:
    matching through one costs ~10 us a request more than a route of the app itself. The
    endpoint takes the Request and returns a Response, so :class:`PlainRoute` calls it as is.
    """
    app.router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        route_class_override=PlainRoute,
        tags=["predict"],
        response_model=PredictResponse,
        responses={
            **ERROR_RESPONSES,
            200: {"content": {"text/csv": {}}, "description": "predictions"},
        },
        openapi_extra={"requestBody": REQUEST_BODY},
        summary="Predict labels and per-class probabilities",
    )
