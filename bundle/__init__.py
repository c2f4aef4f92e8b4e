"""The model bundle: the one contract between training and serving.

A bundle is a directory ``<artifacts>/<name>/<version>/`` holding the files named in
:mod:`bundle.layout`. Training writes it through :func:`publish_version`; the service
reads it through :func:`verify_manifest` and :func:`read_metadata`. This package uses
only the standard library, numpy and pydantic.
"""

from bundle import columns
from bundle.errors import BundleError
from bundle.layout import (
    CONFUSION_MATRIX_PNG,
    LABEL_ENCODER,
    MANIFEST,
    METADATA,
    METRICS_JSON,
    MODEL_KERAS,
    MODEL_TFLITE,
    REPORT_DIR,
    REQUIRED_FILES,
    SERVING,
    TEMP_PREFIX,
)
from bundle.manifest import sha256_file, verify_manifest, write_manifest
from bundle.metadata import (
    BACKGROUND_ROWS,
    CORE_LAYER,
    FORMAT_VERSION,
    READABLE_FORMATS,
    BackgroundSample,
    FeatureStats,
    Metadata,
    Reference,
    read_metadata,
    write_metadata,
)
from bundle.serving import ServingConfig, check_label, read_serving, write_serving
from bundle.versions import (
    MODEL_NAME_PATTERN,
    list_models,
    list_versions,
    model_dir,
    new_staging_dir,
    publish_version,
)

__all__ = [
    "BACKGROUND_ROWS",
    "CONFUSION_MATRIX_PNG",
    "CORE_LAYER",
    "FORMAT_VERSION",
    "LABEL_ENCODER",
    "MANIFEST",
    "METADATA",
    "METRICS_JSON",
    "MODEL_KERAS",
    "MODEL_NAME_PATTERN",
    "MODEL_TFLITE",
    "READABLE_FORMATS",
    "REPORT_DIR",
    "REQUIRED_FILES",
    "SERVING",
    "TEMP_PREFIX",
    "BackgroundSample",
    "BundleError",
    "FeatureStats",
    "Metadata",
    "Reference",
    "ServingConfig",
    "check_label",
    "columns",
    "list_models",
    "list_versions",
    "model_dir",
    "new_staging_dir",
    "publish_version",
    "read_metadata",
    "read_serving",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
    "write_metadata",
    "write_serving",
]
