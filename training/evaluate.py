"""Test-split metrics, a printed table and the confusion-matrix picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def compute(y_true: np.ndarray, y_pred: np.ndarray, labels: list) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f1)),
        "test_rows": len(y_true),
        "per_class": {
            str(label): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": [str(label) for label in labels],
            "matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        },
    }


def format_table(metrics: dict) -> str:
    """The metrics and confusion matrix as plain-text tables."""
    per_class = metrics["per_class"]
    width = max(9, *(len(name) for name in per_class))
    lines = [
        f"test accuracy {metrics['accuracy']:.4f} on {metrics['test_rows']} rows",
        "",
        f"{'class':<{width}}  precision  recall     f1  support",
    ]
    for name, row in per_class.items():
        lines.append(
            f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}"
            f"  {row['support']:7d}"
        )
    labels = metrics["confusion_matrix"]["labels"]
    cell = max(6, *(len(label) for label in labels))
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * width + "".join(f"  {label:>{cell}}" for label in labels))
    for label, row in zip(labels, metrics["confusion_matrix"]["matrix"], strict=True):
        lines.append(f"{label:<{width}}" + "".join(f"  {n:>{cell}}" for n in row))
    return "\n".join(lines)


def save(metrics: dict, report_dir: Path) -> None:
    """Write ``metrics.json`` and ``confusion_matrix.png`` into the report directory."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    labels = metrics["confusion_matrix"]["labels"]
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"])
    size = 2.5 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {metrics['accuracy']:.3f}")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > threshold else "black")
    fig.tight_layout()
    fig.savefig(report_dir / "confusion_matrix.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
