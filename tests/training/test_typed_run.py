"""A typed, imbalanced table trained end to end: printed notes, class weights and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bundle
from training.pipeline import Options, run

ROWS = 600
BLANK_TARGETS = 7


def make_fraud_csv(path: Path, seed: int = 5) -> Path:
    """About 5% positives; a row counter and e-mail addresses (IDs), a text column that is
    numbers but for two cells, blanks in every kind of column and in the target."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, ROWS + 1))
    amount = rng.gamma(2.0, 50.0, ROWS).round(2)
    country = rng.choice(["de", "fr", "nl", "es"], ROWS)
    verified = rng.random(ROWS) < 0.6
    score = amount / 100 - 2 * verified + (country == "nl") * 1.5 + rng.normal(0, 0.5, ROWS)
    fraud = np.where(score > np.quantile(score, 0.95), "yes", "no")
    lines = ["id,email,amount,country,verified,code,fraud"]
    blank_target = set(range(11, 11 + 13 * BLANK_TARGETS, 13))
    for i in range(ROWS):
        code = "x" if i in (17, 401) else str(int(rng.integers(100, 999)))
        lines.append(
            ",".join(
                [
                    str(ids[i]),
                    f"user{ids[i]}@example.org",
                    "NA" if i % 31 == 2 else f"{amount[i]:.2f}",
                    "" if i % 29 == 4 else str(country[i]),
                    " " if i % 37 == 6 else ("TRUE" if verified[i] else "False"),
                    code,
                    "" if i in blank_target else str(fraud[i]),
                ]
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_imbalanced_table_notes_weights_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_fraud_csv(tmp_path / "fraud.csv")
    artifacts = tmp_path / "artifacts"
    published = run(Options(data=data, target="fraud", artifacts=artifacts, epochs=5))
    assert published == artifacts / "fraud" / "1"
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == str(published)

    # The notes, before training starts.
    assert "left out column 'id': its integers just count the rows" in out
    assert "left out column 'email': every value is distinct text" in out
    assert "column 'code' is numbers except 2 cells ('x')" in out
    assert f"dropped {BLANK_TARGETS} rows whose target 'fraud' is blank" in out
    assert "(1 numeric, 2 categorical, 1 boolean)" in out
    assert "class weights balanced" in out
    # The report: the baseline beside accuracy, and the AUCs of a binary target.
    assert "(majority-class baseline " in out and "always 'no')" in out
    assert "ROC AUC " in out and "PR AUC " in out and "positive class 'yes'" in out

    metadata = bundle.read_metadata(published)
    assert metadata.training["class_weight"] == "balanced"
    assert metadata.training["rows_dropped_blank_target"] == BLANK_TARGETS
    assert metadata.training["rows"] == ROWS - BLANK_TARGETS
    assert set(metadata.columns_left_out) == {"id", "email"}
    kinds = {f.name: (f.kind, f.nullable) for f in metadata.features}
    assert kinds == {
        "amount": ("numeric", True),
        "country": ("categorical", True),
        "verified": ("boolean", True),
        "code": ("categorical", False),
    }
    metrics = json.loads((published / bundle.METRICS_JSON).read_text())
    support = {label: row["support"] for label, row in metrics["per_class"].items()}
    assert metrics["baseline_label"] == "no"
    assert metrics["baseline_accuracy"] == pytest.approx(support["no"] / metrics["test_rows"])
    assert 0.9 < metrics["baseline_accuracy"] < 1
    assert 0 <= metrics["roc_auc"] <= 1 and 0 <= metrics["pr_auc"] <= 1
    assert metadata.metrics["roc_auc"] == metrics["roc_auc"]
    assert metadata.metrics["baseline_accuracy"] == metrics["baseline_accuracy"]
