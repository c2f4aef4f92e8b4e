"""The HTTP stack's ceiling: a FastAPI route that parses the same body and returns a constant.

Everything a prediction service cannot avoid (uvicorn, FastAPI routing, reading and parsing the
JSON body, sending an answer of the same size) and nothing else.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

# The service's answer to one Iris row, as bytes: the ceiling sends as much as the service does.
ANSWER = orjson.dumps(
    {
        "model": "iris",
        "version": 1,
        "predictions": [
            {
                "label": "setosa",
                "probabilities": {
                    "setosa": 0.9793245792388916,
                    "versicolor": 0.02057075686752796,
                    "virginica": 0.00010466784442542121,
                },
                "warnings": [],
            }
        ],
    }
)


def create_app() -> FastAPI:
    """The ceiling app: ``POST /predict`` parses the JSON body and answers a constant."""
    app = FastAPI(title="ceiling")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(ANSWER, media_type="application/json")

    return app
