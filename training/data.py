"""Load the training table (embedded Iris or a CSV), type its columns, validate it and split it.

A CSV is read as text and each column typed here, the way the service reads a CSV body: cells
are stripped, the markers in :data:`bundle.columns.MISSING_TOKENS` are blanks, a column of
numbers is numeric, a column of true/false is boolean, anything else is categorical.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from bundle.columns import BLANK, MISSING_TOKENS, Kind, parse_boolean
from training.errors import TrainingError

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_TARGET = "species"
# A text column that is numbers in at least this share of its cells gets a note: a typo?
MOSTLY_NUMERIC = 0.9
# Column separators a header may use instead of the comma (Excel writes ";" in many locales).
OTHER_DELIMITERS = (";", "\t", "|")


@dataclass(frozen=True)
class Column:
    """One typed feature column of the whole table.

    ``values``: float64 with NaN for blanks (numeric; boolean as 0/1), or an object array of
    stripped strings with :data:`BLANK` for blanks (categorical).
    """

    name: str
    kind: Kind
    values: np.ndarray

    @property
    def missing(self) -> np.ndarray:
        """True where the cell is blank."""
        if self.kind == "categorical":
            return self.values == BLANK
        return np.isnan(self.values)


@dataclass(frozen=True)
class Dataset:
    """Typed feature columns and raw target labels, with a fingerprint of the source."""

    columns: list[Column]
    target: str
    y: np.ndarray  # raw labels [rows]
    sha256: str
    notes: list[str] = field(default_factory=list)  # printed by the run
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it is no feature
    dropped_rows: int = 0  # rows whose target was blank

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def rows(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Split:
    """Row indices of the stratified train/validation/test split."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Choices:
    """What the user said about columns: features to use, categorical codes, columns to drop."""

    features: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


def load_iris_frame() -> pd.DataFrame:
    """The Iris data set shipped with scikit-learn, with snake_case column names."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=IRIS_FEATURES)
    frame[IRIS_TARGET] = np.asarray(iris.target_names)[iris.target]
    return frame


def read_csv(path: Path) -> tuple[pd.DataFrame, str]:
    """Read a CSV file as text cells and return it with the sha256 of its bytes."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise TrainingError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise TrainingError(f"data file is a directory: {path}") from None
    except OSError as exc:
        raise TrainingError(f"cannot read data file {path}: {exc.strerror}") from None
    if not raw.strip():
        raise TrainingError(f"data file is empty: {path}")
    notes = []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Excel on Windows saves "CSV" in the locale's code page; read it rather than refuse it.
        text = raw.decode("cp1252", errors="replace")
        notes.append(f"{Path(path).name} is not UTF-8; read it as Windows-1252 (cp1252)")
    delimiter = _delimiter(text)
    if delimiter != ",":
        notes.append(f"{Path(path).name} separates its columns with {delimiter!r}")
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, na_filter=False
        )
    except pd.errors.EmptyDataError:
        raise TrainingError(f"data file is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"cannot parse {path} as CSV: {first}") from None
    frame.attrs["notes"] = notes
    return frame, hashlib.sha256(raw).hexdigest()


def _delimiter(text: str) -> str:
    """The comma, unless the header line has none and has one of OTHER_DELIMITERS instead."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    counts = {d: header.count(d) for d in OTHER_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


# -- typing columns ---------------------------------------------------------------------------
def _text(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column as stripped strings and its blank mask."""
    text = column.astype(object).map(lambda v: "" if v is None else str(v).strip()).to_numpy()
    blank = np.fromiter((v in MISSING_TOKENS for v in text), dtype=bool, count=len(text))
    return text, blank


def _numbers(text: np.ndarray) -> np.ndarray:
    """Text to float64, NaN where a cell is not a number (Python digit groups such as 1_0 and
    non-ASCII digits are not: float() reads them, no CSV writer means them)."""
    plain = np.fromiter((v.isascii() and "_" not in v for v in text), dtype=bool, count=len(text))
    numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    return np.where(plain, numbers, np.nan)


def type_column(name: str, column: pd.Series, categorical: bool) -> tuple[Column, str | None]:
    """Infer a column's kind (or take the user's ``categorical``); return it and a note."""
    if not categorical and column.dtype != object and pd.api.types.is_bool_dtype(column):
        return Column(name, "boolean", column.to_numpy(dtype=np.float64)), None
    if not categorical and pd.api.types.is_numeric_dtype(column):
        return Column(name, "numeric", column.to_numpy(dtype=np.float64, na_value=np.nan)), None
    text, blank = _text(column)
    present = text[~blank]
    if categorical:
        return Column(name, "categorical", np.where(blank, BLANK, text).astype(object)), None
    numbers = _numbers(present)
    parsed = ~np.isnan(numbers)
    if parsed.all():
        values = np.full(len(text), np.nan)
        values[~blank] = numbers
        return Column(name, "numeric", values), None
    flags = [parse_boolean(v) for v in present]
    if None not in flags:
        values = np.full(len(text), np.nan)
        values[~blank] = np.asarray(flags, dtype=np.float64)
        return Column(name, "boolean", values), None
    note = None
    if len(present) and parsed.mean() >= MOSTLY_NUMERIC:
        odd = sorted(set(present[~parsed].tolist()))
        shown = ", ".join(repr(v[:20]) for v in odd[:3])
        note = (
            f"column {name!r} is numbers except {int((~parsed).sum())} cells ({shown}); "
            "it is treated as text: fix those cells, or --exclude it"
        )
    return Column(name, "categorical", np.where(blank, BLANK, text).astype(object)), note


def id_like(column: Column) -> str | None:
    """Why a column looks like an identifier (and so is no feature), or None."""
    rows = len(column.values)
    if rows < 2 or column.missing.any():
        return None
    if column.kind == "categorical":
        if len(set(column.values.tolist())) == rows:
            return "every value is distinct text (an ID, a key or a name)"
        return None
    values = column.values
    if (
        column.kind == "numeric"
        and np.all(values == np.round(values))
        and len(np.unique(values)) == rows
        and values.max() - values.min() == rows - 1
    ):
        return "its integers just count the rows"
    return None


def _target_labels(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Target labels typed as pandas would (integers, floats, booleans or text); blank mask."""
    if column.dtype != object and not pd.api.types.is_string_dtype(column):
        labels = column.to_numpy()
        return labels, pd.isna(column).to_numpy()
    text, blank = _text(column)
    present = text[~blank]
    numbers = _numbers(present)
    if len(present) and not np.isnan(numbers).any():
        if np.all(numbers == np.round(numbers)) and np.abs(numbers).max() < 2**53:
            return _fill(text, blank, numbers.astype(np.int64)), blank
        return _fill(text, blank, numbers), blank
    flags = [parse_boolean(v) for v in present]
    if len(present) and None not in flags:
        return _fill(text, blank, np.asarray(flags, dtype=bool)), blank
    return text.astype(object), blank


def _fill(text: np.ndarray, blank: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros(len(text), dtype=present.dtype)
    out[~blank] = present
    return out


def select(frame: pd.DataFrame, target: str, choices: Choices | None, sha256: str) -> Dataset:
    """Type the feature columns and the target, reporting every problem found at once."""
    choices = choices or Choices()
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if len(set(columns)) != len(columns):
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        raise TrainingError(f"duplicate column name: {', '.join(map(repr, duplicated))}")
    problems: list[str] = []
    if frame.empty:
        problems.append("data has a header but no rows")
    if target not in columns:
        problems.append(f"target column {target!r} not found; columns are: {', '.join(columns)}")
    for flag, names in (
        ("--features", choices.features or []),
        ("--categorical", choices.categorical),
        ("--exclude", choices.exclude),
    ):
        unknown = [n for n in names if n not in columns]
        if unknown:
            problems.append(f"{flag} names unknown column {', '.join(map(repr, unknown))}")
        if len(set(names)) != len(names):
            problems.append(f"a column is listed twice in {flag}")
        if target in names and flag != "--exclude":
            problems.append(f"target column {target!r} is also listed in {flag}")
    if target in choices.exclude:
        problems.append(f"target column {target!r} is listed in --exclude")
    if choices.features is not None:
        clash = [n for n in choices.features if n in choices.exclude]
        if clash:
            problems.append(f"{', '.join(map(repr, clash))} is in both --features and --exclude")
        unused = [n for n in choices.categorical if n in columns and n not in choices.features]
        if unused:
            problems.append(
                f"--categorical names {', '.join(map(repr, unused))}, not in --features"
            )
    unused = [n for n in choices.categorical if n in choices.exclude]
    if unused:
        problems.append(f"{', '.join(map(repr, unused))} is in both --categorical and --exclude")
    if problems:
        raise TrainingError("; ".join(problems))

    labels, blank_target = _target_labels(frame[target])
    keep = ~blank_target
    dropped = int(blank_target.sum())
    if not keep.any():
        raise TrainingError(f"target column {target!r} has no values")
    labels = labels[keep]

    named = choices.features is not None
    names = (
        list(choices.features)
        if named
        else [c for c in columns if c != target and c not in choices.exclude]
    )
    notes: list[str] = list(frame.attrs.get("notes", []))
    left_out: dict[str, str] = {c: "--exclude" for c in choices.exclude}
    if named:
        unnamed = [c for c in columns if c != target and c not in names and c not in left_out]
        left_out.update(dict.fromkeys(unnamed, "not in --features"))
    typed: list[Column] = []
    for name in names:
        column, note = type_column(name, frame[name], name in choices.categorical)
        if note:
            notes.append(note)
        # Judged on every row of the file: an ID still counts the rows when some are dropped.
        reason = None if named else id_like(column)
        if reason is not None:
            left_out[name] = reason
            notes.append(f"left out column {name!r}: {reason}; name it in --features to use it")
            continue
        column = Column(name, column.kind, column.values[keep])
        if column.kind != "categorical":
            present = column.values[~column.missing]
            if not len(present):
                problems.append(f"feature column {name!r} has no values")
            elif not np.isfinite(present).all():
                problems.append(f"feature column {name!r} has infinite values")
        elif column.missing.all():
            problems.append(f"feature column {name!r} has no values")
        typed.append(column)
    if not typed and not problems:
        problems.append("no feature columns: the data has only the target column")
    if problems:
        raise TrainingError("; ".join(problems))
    if dropped:
        notes.append(f"dropped {dropped} rows whose target {target!r} is blank")
    return Dataset(
        columns=typed,
        target=target,
        y=labels,
        sha256=sha256,
        notes=notes,
        left_out=left_out,
        dropped_rows=dropped,
    )


def load_dataset(path: Path | None, target: str | None, choices: Choices | None = None) -> Dataset:
    """Load the CSV at ``path``, or the embedded Iris data when ``path`` is None."""
    if path is None:
        frame = load_iris_frame()
        digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
        return select(frame, target or IRIS_TARGET, choices, digest)
    if not target:
        raise TrainingError("--target is required with --data")
    frame, digest = read_csv(path)
    return select(frame, target, choices, digest)


def split(y: np.ndarray, test_size: float, seed: int) -> Split:
    """Stratified split: ``test_size`` for test, the same share of the rest for validation."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise TrainingError(f"the target has a single class ('{classes[0]}'); need at least two")
    # Each class needs a row in each of the three parts.
    needed = max(3, int(np.ceil(1 / min(test_size, 1 - test_size))) + 1)
    few = [
        f"class '{label}' has {count} rows"
        for label, count in zip(classes, counts, strict=True)
        if count < needed
    ]
    if few:
        raise TrainingError(f"{'; '.join(few)}; each class needs at least {needed} for the split")
    rows = np.arange(len(y))
    try:
        rest, test = train_test_split(rows, test_size=test_size, stratify=y, random_state=seed)
        train, validation = train_test_split(
            rest, test_size=test_size, stratify=y[rest], random_state=seed
        )
    except ValueError as exc:
        raise TrainingError(f"cannot split the data: {exc}") from None
    return Split(train=np.sort(train), validation=np.sort(validation), test=np.sort(test))
