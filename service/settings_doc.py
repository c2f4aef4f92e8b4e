"""The README's settings table, generated from :class:`service.settings.Settings`.

``python -m service.settings_doc`` prints the table; ``--check README.md`` exits 1 with one line
when the table between the README's markers differs from it; ``--write README.md`` rewrites it.
The columns come from each field: its environment name, its default, and its description, with
the bounds and choices the field declares and a link to the page that explains it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from service.settings import Settings

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
HEADER = ("| variable | default | meaning |", "| --- | --- | --- |")

# Where each setting is explained, relative to README.md.
LINKS: dict[str, tuple[str, str]] = {
    "model_name": ("A model repository", "docs/repository.md#a-model-repository"),
    "default_model": ("A model repository", "docs/repository.md#a-model-repository"),
    "model_versions": ("A model repository", "docs/repository.md#a-model-repository"),
    "poll_seconds": (
        "Retraining without downtime",
        "docs/repository.md#retraining-without-downtime",
    ),
    "grpc_port": (
        "Open Inference Protocol over gRPC",
        "docs/protocols.md#open-inference-protocol-over-grpc",
    ),
    "explain_evaluations": ("Explaining a prediction", "docs/explanations.md"),
    "payload_log_dir": (
        "The monitoring loop",
        "docs/observability.md#the-monitoring-loop-payload-log-drift-replay",
    ),
    "drift_window": (
        "The monitoring loop",
        "docs/observability.md#the-monitoring-loop-payload-log-drift-replay",
    ),
    "max_concurrency": ("Overload and shutdown", "docs/hardening.md#overload-and-shutdown"),
    "request_timeout_seconds": (
        "Overload and shutdown",
        "docs/hardening.md#overload-and-shutdown",
    ),
    "shutdown_timeout_seconds": (
        "Overload and shutdown",
        "docs/hardening.md#overload-and-shutdown",
    ),
    "artifact_signing_key": ("SECURITY.md", "SECURITY.md"),
}

_SIZES = ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def fields() -> dict[str, FieldInfo]:
    return dict(Settings.model_fields)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def default_text(name: str, info: FieldInfo) -> str:
    """The default as the environment spells it: ``unset`` for None, sizes in bytes also in
    KiB/MiB/GiB."""
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        text = f"`{_number(value)}`"
        if name.endswith("_bytes"):
            for size, unit in _SIZES:
                if value >= size and value % size == 0:
                    return f"{text} ({value // size} {unit})"
        return text
    return f"`{value}`"


def _choices(info: FieldInfo) -> tuple[str, ...]:
    """The values of a ``Literal`` field (``Literal[...] | None`` included)."""
    annotation = info.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return tuple(str(choice) for choice in typing.get_args(candidate))
    return ()


def _bounds(info: FieldInfo) -> str:
    low = high = None
    low_open = high_open = False
    for item in info.metadata:
        if isinstance(item, Ge):
            low = item.ge
        elif isinstance(item, Gt):
            low, low_open = item.gt, True
        elif isinstance(item, Le):
            high = item.le
        elif isinstance(item, Lt):
            high, high_open = item.lt, True
    if low is not None and high is not None and not (low_open or high_open):
        return f"From {_number(low)} to {_number(high)}."
    if low == 0 and not low_open and high is None:
        return ""  # not negative: a count or a duration says so itself
    parts = []
    if low is not None:
        parts.append(f"{'more than' if low_open else 'at least'} {_number(low)}")
    if high is not None:
        parts.append(f"{'less than' if high_open else 'at most'} {_number(high)}")
    return "; ".join(parts).capitalize() + "." if parts else ""


def _code(text: str, choices: Sequence[str]) -> str:
    """Plain description text to Markdown: environment names, routes, quoted text, ``<...>``
    placeholders and the field's own choices as code."""
    names = {name.upper() for name in Settings.model_fields}
    text = re.sub(r"(?<!\w)'([^']+)'(?!\w)", r"`\1`", text)
    spans = re.split(r"(`[^`]*`)", text)
    for i, span in enumerate(spans):
        if span.startswith("`"):
            continue

        def token(match: re.Match[str]) -> str:
            word, tail = match.group(1), match.group(2)
            if (
                word in names
                or word.startswith("/")
                or "<" in word
                or word == "*"
                or word in choices
                or re.fullmatch(r"\d+\*\*\w+", word)
            ):
                return f"`{word}`{tail}"
            return match.group(0)

        spans[i] = re.sub(r"(?<![\w`])([^\s(),;:`]+?)([.,;:)]*)(?=\s|$|\))", token, span)
    return "".join(spans)


def meaning_text(name: str, info: FieldInfo) -> str:
    """The description as Markdown (taken as written when it already uses code spans), then the
    field's bounds, its choices unless the text names them all, and a link."""
    description = " ".join((info.description or "").split())
    choices = _choices(info)
    text = description if "`" in description else _code(description, choices)
    if text and not text.endswith((".", ")")):
        text += "."
    extra = []
    if choices and not all(f"`{choice}`" in text for choice in choices):
        extra.append("One of " + ", ".join(f"`{choice}`" for choice in choices) + ".")
    bounds = _bounds(info)
    if bounds:
        extra.append(bounds)
    if name in LINKS:
        label, target = LINKS[name]
        extra.append(f"See [{label}]({target}).")
    return " ".join([text, *extra]).strip().replace("|", "\\|")


def settings_table() -> str:
    """The Markdown table: one row per ``Settings`` field, in the class's order."""
    rows = [
        f"| `{name.upper()}` | {default_text(name, info)} | {meaning_text(name, info)} |"
        for name, info in fields().items()
    ]
    return "\n".join([*HEADER, *rows]) + "\n"


def current_table(document: str) -> str:
    """The text between the markers; ValueError when they are missing or out of order."""
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {START} ... {END} markers around the settings table")
    return document[start + len(START) : end].strip("\n") + "\n"


def replace_table(document: str, table: str) -> str:
    current_table(document)  # the markers are there
    start, end = document.find(START) + len(START), document.find(END)
    return document[:start] + "\n" + table + document[end:]


def _first_difference(current: str, wanted: str) -> str:
    have, want = current.splitlines(), wanted.splitlines()
    for number, (a, b) in enumerate(zip(have, want, strict=False), 1):
        if a != b:
            variable = re.match(r"\| `([A-Z_]+)`", b) or re.match(r"\| `([A-Z_]+)`", a)
            return f"row {number}" + (f" ({variable.group(1)})" if variable else "")
    return f"{len(have)} rows where Settings has {len(want)}"


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a temporary file beside it, renamed over it."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.settings_doc",
        description="Print the README's settings table, generated from service.settings.Settings.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if FILE's table differs")
    group.add_argument("--write", metavar="FILE", type=Path, help="rewrite FILE's table")
    args = parser.parse_args(argv)
    table = settings_table()
    path: Path | None = args.check or args.write
    if path is None:
        sys.stdout.write(table)
        return 0
    try:
        document = path.read_text(encoding="utf-8")
        current = current_table(document)
    except (OSError, ValueError) as exc:
        print(f"{path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 1
    if current == table:
        return 0
    if args.check:
        print(
            f"{path}: the settings table differs from service.settings.Settings at "
            f"{_first_difference(current, table)}; run python -m service.settings_doc "
            f"--write {path}",
            file=sys.stderr,
        )
        return 1
    _write(path, replace_table(document, table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
