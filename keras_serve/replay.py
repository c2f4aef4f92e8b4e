"""Rescore a payload log with another model version, offline, and compare with what was served.

The log is the service's ``PAYLOAD_LOG_DIR``: ``*.jsonl`` files (rotated ones too), one request
per line with its ``inputs`` (records by feature name) and ``outputs`` (label and probabilities
by class). Rows are read through the service's own ``/predict`` parser, so typed features,
blanks and unseen categories are read as the service reads them, and scored in batches of
:data:`BATCH_ROWS`, so memory stays bounded whatever the size of the log. No HTTP here.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import bundle
from bundle.versions import scan_versions
from service.errors import BundleRejected, ServiceError
from service.model import LoadedModel, load_version
from service.protocols.predict import parse
from service.typed import MissingValues

BATCH_ROWS = 10_000
LOG_PATTERN = "*.jsonl"
# Other models named in a log, kept to name them when the asked one has no line: a bound, as a
# log may hold any number of names.
MAX_MODELS_NAMED = 10

RUNTIMES = (None, "litert", "keras")  # None: the service's choice
_NUMBER = (int, float)
_LABEL = (str, int, float)


class ReplayError(Exception):
    """Bad input (log directory, model, version): the message names the problem."""


@dataclass(frozen=True)
class Location:
    """Where a row is in the log: its file (relative to the log directory), line and index."""

    file: str
    line: int
    row: int

    def __str__(self) -> str:
        return f"{self.file} line {self.line}, row {self.row}"


@dataclass(frozen=True)
class Difference:
    """The largest |replayed - logged| probability, and the row and class it was found at."""

    value: float
    label: str
    logged: float
    replayed: float
    where: Location


@dataclass
class Report:
    """What a replay found. ``rows`` counts the rows rescored and compared (agree + disagree);
    rows the replay version cannot read are ``unscorable`` instead."""

    model: str
    replay_version: int
    runtime: str
    log: Path
    files: int = 0
    lines_read: int = 0
    lines_replayed: int = 0
    failed: int = 0  # requests answered with an error: no outputs to compare with
    other_model: int = 0
    malformed: int = 0
    first_malformed: str | None = None
    rows: int = 0
    agree: int = 0
    unscorable: int = 0
    first_unscorable: str | None = None
    largest: Difference | None = None
    flips: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    logged_versions: Counter[int] = field(default_factory=Counter)
    other_models: set[str] = field(default_factory=set)

    @property
    def disagree(self) -> int:
        return self.rows - self.agree

    def as_dict(self) -> dict[str, Any]:
        """The report as one JSON-ready object (``--json``)."""
        largest = self.largest
        return {
            "model": self.model,
            "replay_version": self.replay_version,
            "runtime": self.runtime,
            "log": str(self.log),
            "files": self.files,
            "lines_read": self.lines_read,
            "lines_replayed": self.lines_replayed,
            "lines_skipped": {
                "failed": self.failed,
                "other_model": self.other_model,
                "malformed": self.malformed,
            },
            "first_malformed": self.first_malformed,
            "rows": self.rows,
            "agree": self.agree,
            "disagree": self.disagree,
            "unscorable": self.unscorable,
            "first_unscorable": self.first_unscorable,
            "largest_difference": None
            if largest is None
            else {
                "value": largest.value,
                "class": largest.label,
                "logged": largest.logged,
                "replayed": largest.replayed,
                "file": largest.where.file,
                "line": largest.where.line,
                "row": largest.where.row,
            },
            "flips": {
                source: dict(sorted(targets.items()))
                for source, targets in sorted(self.flips.items())
            },
            "rows_by_logged_version": {
                str(version): count for version, count in sorted(self.logged_versions.items())
            },
        }

    def text(self) -> str:
        """The report for a person: a few lines."""
        share = f" ({self.agree / self.rows:.1%})" if self.rows else ""
        logged = ", ".join(
            f"version {version}: {count}" for version, count in sorted(self.logged_versions.items())
        )
        lines = [
            f"Replayed model {self.model} version {self.replay_version} ({self.runtime}) "
            f"on {self.log} ({self.files} files)",
            f"  lines: {self.lines_read} read, {self.lines_replayed} replayed; skipped "
            f"{self.failed} failed, {self.other_model} other model, {self.malformed} malformed",
        ]
        if self.first_malformed:
            lines.append(f"  first malformed line: {self.first_malformed}")
        lines += [
            f"  rows: {self.rows} compared{f' (logged {logged})' if logged else ''}",
            f"  agree: {self.agree}{share}, disagree: {self.disagree}",
        ]
        if self.largest is not None and self.largest.value == 0:
            lines.append("  largest probability difference: 0 (the same probabilities)")
        elif self.largest is not None:
            d = self.largest
            lines.append(
                f"  largest probability difference: {d.value:.6f}, class {d.label} at {d.where} "
                f"(logged {d.logged:.6f}, replayed {d.replayed:.6f})"
            )
        if self.flips:
            lines.append("  label flips (logged -> replayed):")
            flips = [(n, s, t) for s, targets in self.flips.items() for t, n in targets.items()]
            for count, source, target in sorted(flips, key=lambda f: (-f[0], f[1], f[2])):
                lines.append(f"    {source} -> {target}: {count}")
        if self.unscorable:
            lines.append(f"  unscorable rows: {self.unscorable} (first: {self.first_unscorable})")
        return "\n".join(lines)


def log_files(directory: Path) -> list[Path]:
    """Every ``*.jsonl`` file under the log directory, at any depth, in sorted path order."""
    if not directory.exists():
        raise ReplayError(f"log directory {directory} does not exist")
    if not directory.is_dir():
        raise ReplayError(f"log {directory} is not a directory")
    try:
        files = sorted(path for path in directory.rglob(LOG_PATTERN) if path.is_file())
    except OSError as exc:
        raise ReplayError(f"log directory {directory} cannot be read: {_reason(exc)}") from None
    if not files:
        raise ReplayError(f"log directory {directory} holds no {LOG_PATTERN} file")
    return files


def load_replay_version(
    artifacts: Path,
    name: str,
    version: int,
    runtime: str | None = None,
    missing_values: MissingValues = "refuse",
) -> LoadedModel:
    """Verify and load ``<artifacts>/<name>/<version>`` as the service would."""
    if runtime not in RUNTIMES:
        raise ReplayError(f"unknown runtime {runtime!r}; use litert or keras")
    if not bundle.MODEL_NAME_PATTERN.fullmatch(name):
        raise ReplayError(f"{name[:64]!r} is not a model name")
    if not artifacts.is_dir():
        raise ReplayError(f"artifacts directory {artifacts} does not exist")
    directory = bundle.model_dir(artifacts, name)
    scan = scan_versions(directory)
    if scan.error:
        raise ReplayError(scan.error)
    if not scan.versions:
        raise ReplayError(f"model {name} has no published version under {artifacts}")
    if version not in scan.versions:
        available = ", ".join(map(str, scan.versions))
        raise ReplayError(
            f"model {name} has no version {version} under {artifacts} (versions: {available})"
        )
    try:
        return load_version(
            directory / str(version),
            runtime,  # type: ignore[arg-type]
            signing_key=os.environ.get("ARTIFACT_SIGNING_KEY") or None,
            missing_values=missing_values,
        )
    except BundleRejected as exc:
        raise ReplayError(f"version {version} of model {name} is rejected: {exc}") from None


def replay(
    log: Path,
    artifacts: Path,
    name: str,
    version: int,
    runtime: str | None = None,
    missing_values: MissingValues = "refuse",
    batch_rows: int = BATCH_ROWS,
) -> Report:
    """Rescore every logged row of model ``name`` with ``version`` and compare."""
    files = log_files(log)
    model = load_replay_version(artifacts, name, version, runtime, missing_values)
    report = Report(name, version, model.runtime.name, log, files=len(files))
    batch = _Batch(model, report)
    seen = 0  # lines of this model, however they ended
    for path in files:
        relative = path.relative_to(log).as_posix()
        for number, document in _lines(path, relative, report):
            reason = _check_line(document, name)
            if reason == "other model":
                report.other_model += 1
                other = document["model"]
                if other is not None and len(report.other_models) < MAX_MODELS_NAMED:
                    report.other_models.add(other[:64])
                continue
            seen += type(document) is dict and document.get("model") == name
            if reason is not None:
                _malformed(report, relative, number, reason)
                continue
            if _failed(document):
                report.failed += 1
                continue
            report.lines_replayed += 1
            logged_version = document["version"]
            for row, (record, output) in enumerate(
                zip(document["inputs"], document["outputs"], strict=True)
            ):
                batch.add(record, output, logged_version, Location(relative, number, row))
                if len(batch) >= batch_rows:
                    batch.flush()
    batch.flush()
    if not seen:
        others = ", ".join(sorted(report.other_models)) or "none"
        raise ReplayError(
            f"the log has no line for model {name} ({report.lines_read} "
            f"line{'' if report.lines_read == 1 else 's'} read; "
            f"models in it: {others})"
        )
    return report


def _lines(path: Path, relative: str, report: Report) -> Iterator[tuple[int, Any]]:
    """The file's lines as JSON documents with their 1-based numbers; blank lines are passed
    over, lines that are not JSON are counted as malformed."""
    try:
        with path.open("rb") as stream:
            for number, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                report.lines_read += 1
                try:
                    document = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    _malformed(report, relative, number, "not valid JSON")
                    continue
                yield number, document
    except OSError as exc:
        raise ReplayError(f"log file {path} cannot be read: {_reason(exc)}") from None


def _malformed(report: Report, file: str, line: int, reason: str) -> None:
    report.malformed += 1
    if report.first_malformed is None:
        report.first_malformed = f"{file} line {line}: {reason}"


def _failed(document: dict[str, Any]) -> bool:
    """A request answered with an error: nothing was scored, or there is nothing to rescore."""
    return document["inputs"] is None or document["outputs"] is None or bool(document.get("error"))


def _check_line(document: Any, name: str) -> str | None:
    """Why a log line cannot be replayed ("other model" for another model's, or for a request
    that named no model the service knew), or None."""
    if type(document) is not dict or "model" not in document:
        return "not a JSON object with a 'model'"
    model = document["model"]
    if model is None or (type(model) is str and model != name):
        return "other model"
    if type(model) is not str:
        return "'model' is not a string"
    for key in ("inputs", "outputs"):
        if key not in document:
            return f"no '{key}'"
    if _failed(document):
        return None  # counted by the caller
    if type(document.get("version")) is not int:
        return "'version' is not an integer"
    inputs, outputs = document["inputs"], document["outputs"]
    if type(inputs) is not list or type(outputs) is not list:
        return "'inputs' and 'outputs' must be arrays"
    if len(inputs) != len(outputs):
        return f"{len(inputs)} inputs but {len(outputs)} outputs"
    for i, output in enumerate(outputs):
        if (
            type(output) is not dict
            or not isinstance(output.get("label"), _LABEL)
            or type(output.get("probabilities")) is not dict
            or not all(
                type(p) in _NUMBER and math.isfinite(p) for p in output["probabilities"].values()
            )
        ):
            return f"outputs[{i}] is not a label with probabilities by class"
    return None


class _Batch:
    """Logged rows waiting to be scored together."""

    def __init__(self, model: LoadedModel, report: Report) -> None:
        self.model = model
        self.report = report
        self.index = {key: i for i, key in enumerate(model.class_keys)}
        self.records: list[Any] = []
        self.outputs: list[dict[str, Any]] = []
        self.versions: list[int] = []
        self.where: list[Location] = []

    def __len__(self) -> int:
        return len(self.records)

    def add(self, record: Any, output: dict[str, Any], version: int, where: Location) -> None:
        self.records.append(record)
        self.outputs.append(output)
        self.versions.append(version)
        self.where.append(where)

    def flush(self) -> None:
        if self.records:
            try:
                self._score()
            finally:
                self.records, self.outputs, self.versions, self.where = [], [], [], []

    def _score(self) -> None:
        model, report = self.model, self.report
        rows, matrices = self._read(list(range(len(self.records))))
        if not rows:
            return
        replayed = model.probabilities_sync(np.concatenate(matrices)).astype(np.float64)
        finite = np.isfinite(replayed).all(axis=1)
        if not finite.all():
            for position in np.flatnonzero(~finite).tolist():
                self._unscorable(rows[position], "the replay version's output is not finite")
            rows = [row for row, ok in zip(rows, finite.tolist(), strict=True) if ok]
            replayed = replayed[finite]
            if not rows:
                return
        keys = model.class_keys
        new = model.label_indices(replayed)
        logged = np.full(replayed.shape, np.nan)
        for position, row in enumerate(rows):
            output = self.outputs[row]
            label = output["label"]
            source = label if type(label) is str else str(label)
            if self.index.get(source) == new[position]:
                report.agree += 1
            else:
                report.flips[source][keys[new[position]]] += 1
            probabilities = output["probabilities"]
            logged[position] = [probabilities.get(key, np.nan) for key in keys]
            report.logged_versions[self.versions[row]] += 1
        report.rows += len(rows)
        difference = np.abs(replayed - logged)
        compared = ~np.isnan(difference)
        if compared.any():
            position, column = np.unravel_index(
                np.argmax(np.where(compared, difference, -1.0)), difference.shape
            )
            value = float(difference[position, column])
            if report.largest is None or value > report.largest.value:
                report.largest = Difference(
                    value,
                    keys[column],
                    float(logged[position, column]),
                    float(replayed[position, column]),
                    self.where[rows[position]],
                )

    def _read(self, rows: list[int]) -> tuple[list[int], list[np.ndarray]]:
        """The rows the replay version can read and their matrices, through the service's own
        parser; a batch it refuses is halved until the refused rows are found, one by one."""
        body = orjson.dumps({"instances": [self.records[i] for i in rows]})
        try:
            return rows, [parse(body, "json", self.model, len(rows)).x]
        except ServiceError as exc:
            if len(rows) == 1:
                message = exc.message.replace("instances[0]", "the row", 1)
                self._unscorable(rows[0], message)
                return [], []
        half = len(rows) // 2
        first, first_x = self._read(rows[:half])
        second, second_x = self._read(rows[half:])
        return first + second, first_x + second_x

    def _unscorable(self, row: int, reason: str) -> None:
        self.report.unscorable += 1
        if self.report.first_unscorable is None:
            self.report.first_unscorable = f"{self.where[row]}: {reason}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
