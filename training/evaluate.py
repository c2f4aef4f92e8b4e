"""Test-split metrics, a printed table and the confusion-matrix picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from training.errors import TrainingError


def decide(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class indices: argmax, or for a binary target class 1 where its probability is at or
    above ``threshold``."""
    if threshold is None:
        return probabilities.argmax(axis=1)
    return (probabilities[:, 1] >= threshold).astype(np.int64)


def choose_threshold(option: str, y_validation: np.ndarray, p_validation: np.ndarray) -> float:
    """``--threshold``: a number in (0, 1), or ``f1``: the one with the best F1 of class 1 on
    the validation split."""
    if option == "f1":
        candidates = np.unique(np.round(p_validation[:, 1], 4))
        candidates = candidates[(candidates > 0) & (candidates < 1)]
        if not len(candidates):
            return 0.5
        scores = [
            f1_score(y_validation, p_validation[:, 1] >= t, zero_division=0) for t in candidates
        ]
        return float(candidates[int(np.argmax(scores))])
    try:
        value = float(option)
    except ValueError:
        raise TrainingError(
            f"--threshold must be 'f1' or a number in (0, 1), got {option!r}"
        ) from None
    if not 0 < value < 1:
        raise TrainingError(f"--threshold must be between 0 and 1, got {option}")
    return value


def compute(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: list,
    probabilities: np.ndarray | None = None,
    threshold: float | None = None,
) -> dict:
    """Accuracy beside the majority-class baseline, per-class precision/recall/F1/support, the
    confusion matrix (rows = truth) and, for a binary target, ROC AUC and PR AUC."""
    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0
    )
    counts = np.bincount(y_true, minlength=len(labels))
    majority = int(np.argmax(counts))
    extra: dict = {}
    if len(labels) == 2 and probabilities is not None and len(set(y_true.tolist())) == 2:
        extra = {
            "roc_auc": float(roc_auc_score(y_true, probabilities[:, 1])),
            "pr_auc": float(average_precision_score(y_true, probabilities[:, 1])),
            "positive_class": str(labels[1]),
            "threshold": 0.5 if threshold is None else threshold,
        }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "baseline_accuracy": float(counts[majority] / max(len(y_true), 1)),
        "baseline_label": str(labels[majority]),
        "macro_f1": float(np.mean(f1)),
        **extra,
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
        f"test accuracy {metrics['accuracy']:.4f} on {metrics['test_rows']} rows "
        f"(majority-class baseline {metrics['baseline_accuracy']:.4f}: always "
        f"'{metrics['baseline_label']}')",
    ]
    if metrics["accuracy"] <= metrics["baseline_accuracy"]:
        lines.append(
            "note: accuracy does not beat always answering the majority class; "
            "look at recall per class" + (" and ROC AUC" if "roc_auc" in metrics else "")
        )
    if "roc_auc" in metrics:
        lines.append(
            f"ROC AUC {metrics['roc_auc']:.4f}, PR AUC {metrics['pr_auc']:.4f} "
            f"(positive class '{metrics['positive_class']}', threshold {metrics['threshold']:.4g})"
        )
    lines += [
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
