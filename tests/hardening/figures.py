"""Figures the hardening tests report to ``make harden`` (a JSON line per figure, summed there)."""

from __future__ import annotations

import json
import os

ENV = "HARDEN_FIGURES"


def record(name: str, value: int) -> None:
    """Add ``value`` to the figure ``name`` when ``$HARDEN_FIGURES`` names a file; else nothing."""
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"name": name, "value": value}) + "\n")


def read(path: str) -> dict[str, int]:
    """Sum the figures written to ``path``."""
    totals: dict[str, int] = {}
    try:
        with open(path) as handle:
            for line in handle:
                item = json.loads(line)
                totals[item["name"]] = totals.get(item["name"], 0) + int(item["value"])
    except FileNotFoundError:
        pass
    return totals
