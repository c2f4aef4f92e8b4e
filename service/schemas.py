"""Response shapes and request examples for the OpenAPI document (/docs).

Routes build their answers with orjson for speed; these models document the same shapes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Label = bool | int | float | str

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


class Prediction(BaseModel):
    label: Label = Field(description="encoder.inverse_transform(argmax(probabilities))")
    probabilities: dict[str, float] = Field(
        description="one probability per class, in encoder order"
    )
    warnings: list[str] = Field(description="features outside the training range, with the range")
    top_k: list[dict[str, Any]] | None = Field(None, description="only when top_k was asked")


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]

    model_config = {
        "json_schema_extra": {
            "example": {
                "model": "iris",
                "version": 1,
                "predictions": [
                    {
                        "label": "setosa",
                        "probabilities": {"setosa": 0.98, "versicolor": 0.015, "virginica": 0.005},
                        "warnings": [],
                    }
                ],
            }
        }
    }


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, naming the field, feature or limit at fault")


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    model: str
    version: int
    runtime: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed JSON or CSV",
        401: "missing or wrong bearer token (when API_KEY is set)",
        413: "body larger than MAX_BODY_BYTES or more rows than MAX_BATCH_ROWS",
        415: "Content-Type is neither application/json nor text/csv",
        422: "the body does not fit the model (features, types, non-finite numbers, top_k)",
        503: "no verified model is loaded, or the service is overloaded",
    }.items()
}
