"""A shell example cut into steps, and the output each step shows checked against a real run.

In the manual, a command's output is the ``# `` lines right under it (a comment after a blank
line, or opening a block, explains instead of showing output). Each step is the commands up to
one such group of lines and the lines it shows. The check does not depend on the trained
weights: JSON keys, nesting, strings and integers must match, while floats need only be numbers
and a label only where the example's model was certain of it (probability of at least
``CERTAIN``); CSV answers keep their header, rows and warnings; other lines are compared with
their numbers masked; ``...`` stands for any lines, or for any text inside a line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CERTAIN = 0.95
ANY = "..."


@dataclass
class Step:
    script: str  # the commands, as written
    shown: list[str] = field(default_factory=list)  # the output lines the manual shows


def steps(text: str, language: str = "sh") -> list[Step]:
    """Cut a shell block into steps, each ending where the manual shows an output."""
    if language == "console":
        return _console_steps(text)
    result = [Step("")]
    previous = "start"  # start, blank, command, output, comment
    lines: list[str] = []
    for line in text.splitlines():
        is_comment = line == "#" or line.startswith("# ")
        if is_comment and previous in ("command", "output"):
            if previous == "command":
                result[-1].script = "\n".join(lines) + "\n"
                lines = []
            result[-1].shown.append(line[2:])
            previous = "output"
            continue
        if previous == "output":
            result.append(Step(""))
        lines.append(line)
        previous = "blank" if not line.strip() else "comment" if is_comment else "command"
    if lines and any(line.strip() for line in lines):
        if result[-1].shown:
            result.append(Step(""))
        result[-1].script = "\n".join(lines) + "\n"
    return [step for step in result if step.script.strip() or step.shown]


def _console_steps(text: str) -> list[Step]:
    """``$ command`` lines, each followed by the output it shows."""
    result: list[Step] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            result.append(Step(line[2:] + "\n"))
        elif result:
            result[-1].shown.append(line)
    return result


# -- JSON -----------------------------------------------------------------------------------------
class _AnyString:
    def __repr__(self) -> str:
        return "<any label>"


ANY_LABEL = _AnyString()


def _certain(probability: object) -> bool:
    return isinstance(probability, int | float) and probability >= CERTAIN


def uncertain_labels(value: Any) -> Any:
    """The expected JSON with each label the example's model was not certain of replaced by
    ``ANY_LABEL``: a prediction's ``label`` beside its ``probabilities`` (a mapping or a list)
    or its ``probability``, and the V2 ``label`` output beside ``probabilities``."""
    if isinstance(value, list):
        return [uncertain_labels(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: uncertain_labels(item) for key, item in value.items()}
    label = value.get("label")
    if isinstance(label, str):
        probabilities, probability = value.get("probabilities"), value.get("probability")
        if isinstance(probabilities, dict):
            sure = _certain(probabilities.get(label))
        elif isinstance(probabilities, list) and probabilities:
            sure = _certain(max(probabilities))
        elif probability is not None:
            sure = _certain(probability)
        else:
            sure = True
        if not sure:
            out["label"] = ANY_LABEL
    outputs = value.get("outputs")
    if isinstance(outputs, list):  # the Open Inference Protocol's answer
        by_name = {o.get("name"): o for o in outputs if isinstance(o, dict)}
        labels, probabilities = by_name.get("label"), by_name.get("probabilities")
        if labels and probabilities and probabilities.get("shape"):
            width = probabilities["shape"][-1]
            flat = probabilities["data"]
            rows = [flat[i : i + width] for i in range(0, len(flat), width)]
            for output in out["outputs"]:
                if output.get("name") == "label":
                    output["data"] = [
                        label if _certain(max(row)) else ANY_LABEL
                        for label, row in zip(output["data"], rows, strict=False)
                    ]
    return out


def compare_json(expected: Any, actual: Any, where: str = "$") -> list[str]:
    """What differs between the JSON a manual shows and the JSON a run gave (see the module)."""
    if expected is ANY_LABEL:
        return [] if isinstance(actual, str) else [f"{where}: {actual!r} is not a label"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: an object is shown, the run gave {actual!r:.80}"]
        problems = []
        if set(expected) != set(actual):
            problems.append(f"{where}: keys {sorted(actual)}, the manual shows {sorted(expected)}")
        for key in expected.keys() & actual.keys():
            problems += compare_json(expected[key], actual[key], f"{where}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: {_short(actual)}, the manual shows {len(expected)} items"]
        return [
            p
            for i, pair in enumerate(zip(expected, actual, strict=True))
            for p in compare_json(*pair, f"{where}[{i}]")
        ]
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        same = actual == expected and type(actual) is type(expected)
        return [] if same else [f"{where}: {actual!r:.200}, the manual shows {expected!r:.200}"]
    if isinstance(expected, int):
        same = isinstance(actual, int) and not isinstance(actual, bool) and actual == expected
        return [] if same else [f"{where}: {actual!r}, the manual shows {expected!r}"]
    if isinstance(expected, float):
        number = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if number and math.isfinite(actual) else [f"{where}: {actual!r} is not a number"]
    return [f"{where}: cannot compare {expected!r}"]


def _short(value: Any) -> str:
    return f"{len(value)} items" if isinstance(value, list) else f"{value!r:.80}"


def parse_json(text: str) -> Any:
    """A JSON value, or a fragment of an object's members (``"a":1,"b":{...}``); None if not."""
    for candidate in (text, "{" + text + "}"):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


# -- one shown line -------------------------------------------------------------------------------
Matcher = Callable[[str], list[str]]  # the problems of an actual line; [] when it matches
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def masked(text: str) -> str:
    """Whitespace collapsed, every number written ``#``."""
    return " ".join(_NUMBER.sub("#", text).split())


def _json_matcher(expected: Any, status: str | None = None) -> Matcher:
    wanted = uncertain_labels(expected)

    def match(line: str) -> list[str]:
        text = line.strip()
        if status is not None:
            if not text.endswith(" " + status):
                return [f"HTTP status: {text[-3:]!r}, the manual shows {status}"]
            text = text[: -len(status) - 1]
        actual = parse_json(text)
        if actual is None:
            return [f"not JSON: {line!r:.200}"]
        return compare_json(wanted, actual)

    return match


def _elided_matcher(expected: str) -> Matcher:
    """A line shown with ``...`` for what it leaves out; labels are not compared."""
    pattern = ""
    for part in re.split(r"(\.\.\.|\"label\":\"[^\"]*\")", expected.strip()):
        if part == ANY:
            pattern += ".*?"
        elif part.startswith('"label":'):
            pattern += '"label":"[^"]*"'
        else:
            pattern += re.escape(part)
    regex = re.compile(pattern)

    def match(line: str) -> list[str]:
        return [] if regex.fullmatch(line.strip()) else [f"{line!r:.200} is not {expected!r}"]

    return match


def _text_matcher(expected: str, exact: bool) -> Matcher:
    wanted = " ".join(expected.split()) if exact else masked(expected)

    def match(line: str) -> list[str]:
        got = " ".join(line.split()) if exact else masked(line)
        return [] if got == wanted else [f"{line!r:.200}, the manual shows {expected!r:.200}"]

    return match


def _csv_row_matcher(header: list[str], expected: str) -> Matcher:
    """A row of a prediction CSV (``label,prob_<class>...,warnings``)."""
    cells = expected.split(",")
    label = cells[0]
    probabilities = dict(zip(header[1:-1], cells[1:-1], strict=False))
    sure = _certain(float(probabilities.get(f"prob_{label}", "nan")))

    def match(line: str) -> list[str]:
        got = line.split(",")
        if len(got) != len(cells):
            return [f"{line!r}: {len(got)} cells, the manual shows {len(cells)}"]
        problems = []
        if sure and got[0] != label:
            problems.append(f"{line!r}: label {got[0]!r}, the manual shows {label!r}")
        for cell in got[1:-1]:
            try:
                float(cell)
            except ValueError:
                problems.append(f"{line!r}: {cell!r} is not a probability")
        if got[-1] != cells[-1]:
            problems.append(f"{line!r}: warnings {got[-1]!r}, the manual shows {cells[-1]!r}")
        return problems

    return match


def matchers(shown: list[str], exact: bool = False) -> list[Matcher | str]:
    """A matcher for each shown line (``ANY`` for a line ``...``)."""
    out: list[Matcher | str] = []
    prediction_csv: list[str] | None = None
    plain_csv = bool(shown) and re.fullmatch(r"[\w.]+(,[\w.]*)+", shown[0].strip()) is not None
    for index, line in enumerate(shown):
        text = line.strip()
        status = re.fullmatch(r"(\{.*\}) (\d{3})", text)
        if text == ANY:
            out.append(ANY)
        elif index == 0 and text.startswith("label,prob_"):
            prediction_csv = text.split(",")
            out.append(_text_matcher(text, exact=True))
        elif prediction_csv is not None:
            out.append(_csv_row_matcher(prediction_csv, text))
        elif status and parse_json(status.group(1)) is not None:
            out.append(_json_matcher(parse_json(status.group(1)), status.group(2)))
        elif text[:1] in '{["' and parse_json(text) is not None:
            out.append(_json_matcher(parse_json(text)))
        elif ANY in text and text[:1] in "{[":
            out.append(_elided_matcher(text))
        else:
            out.append(_text_matcher(line, exact=exact or plain_csv))
    return out


def check(shown: list[str], output: str, exact: bool = False) -> list[str]:
    """The problems of a step's output against the lines the manual shows: they must be its
    last lines (earlier commands of the step may print more before them)."""
    expected = matchers(shown, exact)
    actual = [line.rstrip() for line in output.splitlines()]
    while actual and not actual[-1] and not (shown and not shown[-1].strip()):
        actual.pop()
    if _matches(expected, actual):
        return []
    fixed = [m for m in expected if m != ANY]
    tail = actual[-len(fixed) :] if fixed else []
    problems = [p for m, line in zip(fixed, tail, strict=False) for p in m(line)]  # type: ignore[operator]
    if len(tail) < len(fixed):
        problems.append(f"{len(actual)} lines of output; the manual shows {len(fixed)}")
    return problems or ["the output does not match the lines shown"]


def _matches(expected: list[Matcher | str], actual: list[str]) -> bool:
    """Whether ``expected`` matches a suffix of ``actual`` (``ANY`` takes any lines)."""

    def at(e: int, a: int) -> bool:
        if e == len(expected):
            return a == len(actual)
        matcher = expected[e]
        if matcher == ANY:
            return any(at(e + 1, b) for b in range(a, len(actual) + 1))
        return a < len(actual) and not matcher(actual[a]) and at(e + 1, a + 1)  # type: ignore[operator]

    return any(at(0, start) for start in range(len(actual) + 1))


def check_document(expected_text: str, output: str) -> list[str]:
    """A whole JSON document shown in a ```json block after the command."""
    expected = parse_json(expected_text)
    if expected is None:
        return [f"the manual's JSON does not parse: {expected_text[:80]!r}"]
    actual = parse_json(output.strip())
    if actual is None:
        return [f"not JSON: {output.strip()[:200]!r}"]
    return compare_json(uncertain_labels(expected), actual)
