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


class ClassExplanation(BaseModel):
    probability: float = Field(description="the class's probability for the row")
    base_value: float = Field(description="the class's mean probability over the background")
    attributions: dict[str, float] = Field(
        description="Shapley value of each feature: they add up to probability - base_value"
    )
    error_bound: float | None = Field(
        None, description="sampled only: 95% bound on each attribution's error"
    )


class Explanation(ClassExplanation):
    label: Label = Field(description="the predicted label, whose probability is explained")
    classes: dict[str, ClassExplanation] | None = Field(
        None, description='every class, when "classes": "all" was asked'
    )
    warnings: list[str]


class ExplainResponse(BaseModel):
    model: str
    version: int
    method: str = Field(description="exact (every coalition) or sampled (permutations)")
    background: str = Field(description="training sample, or training means for older bundles")
    background_rows: int = Field(description="background rows the coalitions were completed from")
    explanations: list[Explanation]


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, naming the field, feature or limit at fault")


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    model: str
    version: int
    runtime: str


def _errors(texts: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": text} for status, text in texts.items()}


# The error answers of /predict.
ERROR_RESPONSES = _errors(
    {
        400: "malformed JSON or CSV",
        401: "missing or wrong bearer token (when API_KEY is set)",
        413: "body larger than MAX_BODY_BYTES or more rows than MAX_BATCH_ROWS",
        415: "Content-Type is neither application/json nor text/csv",
        422: "the body does not fit the model (features, types, non-finite numbers, top_k)",
        503: "no verified model is loaded, or the service is overloaded",
    }
)
# The error answers of the standard protocols' routes (V2, TF Serving).
STANDARD_ERRORS = _errors(
    {
        400: "malformed JSON, or a request that does not fit the model's signature",
        401: "missing or wrong bearer token (when API_KEY is set)",
        404: "unknown model name, or a version that is not loaded",
        413: "body larger than MAX_BODY_BYTES or more rows than MAX_BATCH_ROWS",
        415: "a Content-Type that is not JSON",
        503: "no verified model is loaded, or the service is overloaded",
    }
)
LOOKUP_ERRORS = {k: STANDARD_ERRORS[k] for k in (404, 503)}


# -- request bodies, as the OpenAPI document shows them (the served model's own examples and
# schemas replace these at run time: service/openapi.py) ------------------------------------
PREDICT_BODY: dict[str, Any] = {
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

EXPLAIN_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/ExplainRequest"},
            "example": {"instances": [IRIS_ROW], "classes": "all"},
        },
        "text/csv": {
            "schema": {"$ref": "#/components/schemas/PredictCSV"},
            "example": "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n",
        },
    },
}


V2_INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/V2InferRequest"},
            "example": {
                "id": "42",
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": [[5.1, 3.5, 1.4, 0.2]],
                    }
                ],
                "outputs": [{"name": "label"}, {"name": "probabilities"}],
            },
        }
    },
}
V2_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **STANDARD_ERRORS,
    200: {
        "description": "the inference response (binary outputs follow the JSON header)",
        "content": {"application/octet-stream": {}},
    },
}

TF_PREDICT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/TFPredictRequest"},
            "examples": {
                "rows": {"value": {"instances": [[5.1, 3.5, 1.4, 0.2]]}},
                "columnar": {"value": {"inputs": {"features": [[5.1, 3.5, 1.4, 0.2]]}}},
            },
        }
    },
}
TF_CLASSIFY_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/TFClassifyRequest"},
            "example": {
                "examples": [
                    {
                        "sepal_length": 5.1,
                        "sepal_width": 3.5,
                        "petal_length": 1.4,
                        "petal_width": 0.2,
                    }
                ]
            },
        }
    },
}
