"""File names inside a bundle version directory."""

MODEL_KERAS = "model.keras"
LABEL_ENCODER = "label_encoder.joblib"
MODEL_TFLITE = "model.tflite"
METADATA = "metadata.json"
MANIFEST = "manifest.json"
REPORT_DIR = "report"
METRICS_JSON = f"{REPORT_DIR}/metrics.json"
CONFUSION_MATRIX_PNG = f"{REPORT_DIR}/confusion_matrix.png"

# Files every published version has; model.tflite is optional for hand-made bundles
# but training always writes it.
REQUIRED_FILES = (MODEL_KERAS, LABEL_ENCODER, METADATA)

# Staging directories start with this prefix; they are never a version.
TEMP_PREFIX = ".tmp-"

# Beside the version directories: the model's labels and traffic split (bundle.serving).
SERVING = "serving.json"
