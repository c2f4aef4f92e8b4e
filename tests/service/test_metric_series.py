"""The plain counters and histograms export exactly what prometheus-client's own would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from service.observability.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from service.observability.series import PlainCounter, PlainHistogram

# Below, on and above bucket bounds, zero, the last finite bound and beyond it.
LATENCIES = [0.0, 0.0004, 0.001, 0.0010001, 0.003, 0.05, 0.7, 2.5, 29.9, 30.0, 31.0, 1e6]


def both(
    kind: str, **options: object
) -> tuple[CollectorRegistry, object, CollectorRegistry, object]:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = {"counter": PlainCounter, "histogram": PlainHistogram}[kind]
    client = {"counter": Counter, "histogram": Histogram}[kind]
    return (
        ours,
        plain("demo", "A demo series.", registry=ours, **options),  # type: ignore[arg-type]
        theirs,
        client("demo", "A demo series.", registry=theirs, **options),  # type: ignore[arg-type]
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by name and labels; ``_created`` values (times) are replaced by 0."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            value = 0.0 if sample.name.endswith("_created") else sample.value
            out[(sample.name, frozenset(sample.labels.items()))] = value
    return out


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def without_created(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


def test_labelled_counter() -> None:
    ours, plain, theirs, client = both("counter", labelnames=["route", "status"])
    for labels, amount in [(("/a", "200"), 1), (("/a", "200"), 3), (("/b", "503"), 1)]:
        plain.labels(*labels).inc(amount)  # type: ignore[attr-defined]
        client.labels(*labels).inc(amount)  # type: ignore[attr-defined]
    assert samples(exposition(ours)) == samples(exposition(theirs))
    assert without_created(exposition(ours)) == without_created(exposition(theirs))


@pytest.mark.parametrize(
    ("buckets", "values"),
    [(LATENCY_BUCKETS, LATENCIES), (BATCH_BUCKETS, [1, 1, 2, 3, 4, 100, 16384, 20000])],
)
def test_labelled_histogram(buckets: tuple[float, ...], values: list[float]) -> None:
    ours, plain, theirs, client = both("histogram", labelnames=["route"], buckets=buckets)
    for i, value in enumerate(values):
        route = "/a" if i % 3 else "/b"
        plain.labels(route).observe(value)  # type: ignore[attr-defined]
        client.labels(route).observe(value)  # type: ignore[attr-defined]
    assert samples(exposition(ours)) == samples(exposition(theirs))
    assert without_created(exposition(ours)) == without_created(exposition(theirs))


def test_unlabelled_histogram_is_exported_from_the_start() -> None:
    ours, plain, theirs, client = both("histogram", buckets=BATCH_BUCKETS)
    assert samples(exposition(ours)) == samples(exposition(theirs))
    for value in (1, 1, 7):
        plain.observe(value)  # type: ignore[attr-defined]
        client.observe(value)  # type: ignore[attr-defined]
    assert samples(exposition(ours)) == samples(exposition(theirs))


def test_openmetrics_exposition() -> None:
    ours, plain, theirs, client = both("histogram", labelnames=["route"], buckets=LATENCY_BUCKETS)
    plain.labels("/a").observe(0.002)  # type: ignore[attr-defined]
    client.labels("/a").observe(0.002)  # type: ignore[attr-defined]
    mine = generate_openmetrics(ours).decode()
    reference = generate_openmetrics(theirs).decode()
    assert without_created(mine) == without_created(reference)


def test_wrong_labels_are_refused() -> None:
    plain = PlainCounter("demo", "A demo series.", ["route"])
    with pytest.raises(ValueError):
        plain.labels("/a", "extra")
    with pytest.raises(ValueError):
        PlainHistogram("demo", "A demo series.", buckets=(1.0, 0.5))
