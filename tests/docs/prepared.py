"""What the manual's examples take as given, made for real: the files its prose describes, the
bundles it names, a payload log written by the service itself."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import make_typed_csv

IRIS_ROWS = (  # "Calling the service": rows.csv
    "petal_length,petal_width,sepal_length,sepal_width\n1.4,0.2,5.1,3.5\n5.2,2.3,6.7,3.0\n"
)
PENGUINS_ROWS = (  # "A real table end to end": penguins-rows.csv
    "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n"
    "Biscoe,48.6,16.0,230,5800,male,2009\n"
    "Dream,,18.4,195,3900,,2008\n"
)


@dataclass(frozen=True)
class Bundles:
    """Version directories of real trained bundles: ``iris`` as ``python -m training`` makes it,
    ``penguins`` trained on the Palmer penguins table with the defaults."""

    iris: Path
    penguins: Path | None = None  # trained only for what needs it


def wine_csv(path: Path, rows: int = 180, seed: int = 7) -> Path:
    """A wine table with a numeric ``quality`` target (5, 6 or 7) that follows ``alcohol`` and
    ``ph``, and a column the example leaves out (``--features alcohol,ph``)."""
    rng = np.random.default_rng(seed)
    alcohol = rng.normal(10.5, 1.0, rows).round(1)
    ph = rng.normal(3.3, 0.15, rows).round(2)
    sugar = rng.gamma(2.0, 1.5, rows).round(1)
    score = (alcohol - 10.5) + 3 * (ph - 3.3) + rng.normal(0, 0.3, rows)
    quality = np.where(score < -0.5, 5, np.where(score > 0.5, 7, 6))
    lines = ["alcohol,ph,residual_sugar,quality"]
    lines += [f"{a},{p},{s},{q}" for a, p, s, q in zip(alcohol, ph, sugar, quality, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def base(work: Path, bundles: Bundles) -> None:
    """A checkout after ``make run``: ``.venv``, ``artifacts/iris/1``, and the files the prose
    describes (``rows.csv``, ``penguins-rows.csv``, ``churn.csv``, ``wine.csv``,
    ``data/churn.csv``)."""
    # The suite's own virtual environment (``.venv`` under ``make test``; any other too).
    (work / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    shutil.copytree(bundles.iris, work / "artifacts" / "iris" / "1")
    (work / "rows.csv").write_text(IRIS_ROWS)
    (work / "penguins-rows.csv").write_text(PENGUINS_ROWS)
    make_typed_csv(work / "churn.csv")
    wine_csv(work / "wine.csv")
    (work / "data").mkdir()
    shutil.copy(work / "churn.csv", work / "data" / "churn.csv")


def repository(work: Path, bundles: Bundles) -> None:
    """``/tmp/repo`` of the model repository's examples: ``iris/1`` and ``penguins/1``."""
    assert bundles.penguins is not None
    shutil.copytree(bundles.iris, work / "repo" / "iris" / "1")
    shutil.copytree(bundles.penguins, work / "repo" / "penguins" / "1")


def iris_versions(work: Path, bundles: Bundles, last: int) -> None:
    """Versions 2 to ``last`` of ``artifacts/iris`` beside version 1 (copies, as a publisher
    would copy them in)."""
    for version in range(2, last + 1):
        shutil.copytree(bundles.iris, work / "artifacts" / "iris" / str(version))


def payload_log(work: Path, bundles: Bundles) -> None:
    """``/var/log/keras-serve``: the payload log of a service that answered a few requests with
    ``iris/1``, and ``iris/2`` to replay them against."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    iris_versions(work, bundles, 2)
    log = work / "payload-log"
    settings = Settings(
        artifacts_dir=work / "artifacts", model_name="iris", model_version=1, payload_log_dir=log
    )
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [6.0, 2.2, 5.0, 1.5], [9.5, 3.0, 0.5, 0.2]]
    with TestClient(create_app(settings)) as client:
        for row in rows:
            assert client.post("/predict", json={"instances": [row]}).status_code == 200
    assert any(log.glob("payloads-*.jsonl")), "the service wrote no payload log"
