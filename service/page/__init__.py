"""The model page, ``GET /``: one self-contained HTML document rendered from a model's card.

Everything the browser needs is in the document (the stylesheet and the script inline, the
confusion matrix as inline SVG), so the page works offline and makes no request but its own
calls to this service: the try-it form posts CSV to the model's ``/predict`` and ``/explain``,
and the live counts read ``/metrics``. A Content-Security-Policy allows exactly that: the
inline script and style by their hashes, connections to this origin only.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

# Metrics shown first, in this order, with their names; any other number in the report follows.
_METRIC_NAMES = {
    "accuracy": "accuracy",
    "baseline_accuracy": "majority-class baseline",
    "macro_f1": "macro F1",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "test_rows": "test rows",
}
_VOCABULARY_SHOWN = 24  # a long vocabulary shows its first values and how many more
_MATRIX_CLASSES = 40  # beyond, the confusion matrix is too big to be a picture (the card has it)
_OPTIONS = 5000  # datalist options on the whole page (a big vocabulary still takes free text)


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


@cache
def security_headers() -> dict[str, str]:
    """The page's headers: its inline script and style allowed by hash, nothing else loaded,
    connections to this origin only (the form's calls and /metrics)."""
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src '{_digest(_asset('page.js'))}'",
            f"style-src '{_digest(_asset('page.css'))}'",
            "connect-src 'self'",
            "img-src data:",
            "form-action 'self'",
            "base-uri 'self'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _number(value: Any, digits: int = 6) -> str:
    """A value as a person reads it: integers whole, other numbers to ``digits`` significant
    digits (33.1, 4062.5, 0.434783)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(str(value))
    if isinstance(value, int) or (
        math.isfinite(value) and value.is_integer() and abs(value) < 1e15
    ):
        return str(int(value))
    return f"{value:.{digits}g}"


def _score(value: Any, decimals: int = 4) -> str:
    """A metric between 0 and 1 to fixed decimals (1.0000, 0.4348); anything else as a number."""
    if isinstance(value, float) and 0 <= value <= 1:
        return f"{value:.{decimals}f}"
    return _number(value)


# Links are relative (see _head), so the page works behind a proxy that serves it under a prefix.
def _page_url(model: str) -> str:
    return "./?" + urlencode({"model": model})


def _model_path(name: str) -> str:
    return "models/" + quote(name, safe="")


# -- sections ------------------------------------------------------------------------------------
def _header(card: Mapping[str, Any], models: Sequence[str], api_key: bool) -> str:
    name = card["name"]
    metadata = card.get("metadata") or {}
    facts = []
    if card.get("ready"):
        facts.append(f"version <b id='model-version'>{card['version']}</b>")
        facts.append(f"runtime <b id='model-runtime'>{escape(str(card['runtime']))}</b>")
    if metadata:
        facts.append(f"target <b>{escape(str(metadata.get('target', '')))}</b>")
        facts.append(f"{escape(str(metadata.get('task', '')))}")
        facts.append(f"{len(metadata.get('classes', []))} classes")
        created = str(metadata.get("created_at", ""))[:19].replace("T", " ")
        if created:
            facts.append(f"trained {escape(created)} UTC")
    switch = ""
    if len(models) > 1:
        links = " ".join(
            f"<a href='{escape(_page_url(other))}'"
            + (" aria-current='page'" if other == name else "")
            + f">{escape(other)}</a>"
            for other in models
        )
        switch = f"<nav id='models' aria-label='models'>Models: {links}</nav>"
    key = (
        "<label class='key'>API key <input id='api-key' type='password' autocomplete='off' "
        "placeholder='API_KEY (Bearer)'></label>"
        if api_key
        else ""
    )
    return (
        f"<header><div><h1 id='model-name'>{escape(name)}</h1>"
        f"<p class='facts'>{' · '.join(facts)}</p>{switch}</div>"
        f"<div class='links'><a href='docs'>API docs</a> <a href='{escape(_model_path(name))}'>"
        f"card (JSON)</a> <a href='metrics'>metrics</a>{key}</div></header>"
    )


def _metrics(report: Mapping[str, Any] | None, threshold: Any) -> str:
    if not report:
        return "<section id='metrics'><h2>Test metrics</h2><p>This version has no report.</p></section>"
    rows = []
    keys = [k for k in _METRIC_NAMES if k in report]
    keys += [
        k
        for k, v in report.items()
        if k not in _METRIC_NAMES
        and k != "threshold"  # the served one is shown below
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    ]
    positive = report.get("positive_class")
    for key in keys:
        value = _score(report[key])
        if key == "baseline_accuracy" and report.get("baseline_label") is not None:
            value += f" <small>(always '{escape(str(report['baseline_label']))}')</small>"
        if key == "roc_auc" and positive is not None:
            value += f" <small>(positive class '{escape(str(positive))}')</small>"
        label = _METRIC_NAMES.get(key, key.replace("_", " "))
        rows.append(
            f"<tr data-metric='{escape(key)}'><th>{escape(label)}</th><td>{value}</td></tr>"
        )
    # The threshold served (the card's), which a label or retraining may have moved from the
    # one the report was made with.
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        of = (
            f" <small>(on the probability of '{escape(str(positive))}')</small>" if positive else ""
        )
        rows.append(
            "<tr data-metric='threshold'><th>decision threshold</th>"
            f"<td>{_score(threshold)}{of}</td></tr>"
        )
    per_class = report.get("per_class")
    classes = ""
    if isinstance(per_class, Mapping) and per_class:
        lines = "".join(
            f"<tr><th>{escape(str(label))}</th>"
            + "".join(
                f"<td>{_score(scores.get(k, ''), 3)}</td>"
                for k in ("precision", "recall", "f1", "support")
            )
            + "</tr>"
            for label, scores in per_class.items()
            if isinstance(scores, Mapping)
        )
        classes = (
            "<table class='per-class'><thead><tr><th>class</th><th>precision</th><th>recall</th>"
            f"<th>F1</th><th>support</th></tr></thead><tbody>{lines}</tbody></table>"
        )
    return (
        "<section id='metrics'><h2>Test metrics</h2>"
        f"<table class='scalars'><tbody>{''.join(rows)}</tbody></table>{classes}</section>"
    )


def confusion_svg(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """The confusion matrix as an SVG picture: rows true, columns predicted, each cell shaded by
    its share of the row (the recall of the diagonal), the counts written in."""
    n = len(labels)
    cell = 44 if n <= 10 else max(18, 440 // n)
    shown = [str(label) if len(str(label)) <= 14 else str(label)[:13] + "…" for label in labels]
    longest = 7 * max((len(s) for s in shown), default=1)  # ~7 px a character at 12 px
    left = 14 + longest
    top = 14 + int(longest * 0.72)  # the column labels are turned 45 degrees
    width, height = left + n * cell + int(longest * 0.72) + 4, top + n * cell + 4
    parts = [
        f"<svg id='confusion-matrix' xmlns='http://www.w3.org/2000/svg' role='img' "
        f"viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
        "font-family='system-ui, sans-serif' font-size='12'>",
        "<title>Confusion matrix on the test split: rows are the true class, columns the "
        "predicted class</title>",
    ]
    for i, (label, text) in enumerate(zip(labels, shown, strict=True)):
        y = top + i * cell + cell / 2 + 4
        parts.append(
            f"<text class='true-label' x='{left - 6}' y='{y:.1f}' text-anchor='end'>"
            f"<title>{escape(str(label))}</title>{escape(text)}</text>"
        )
        x = left + i * cell + cell / 2
        parts.append(
            f"<text class='predicted-label' x='{x:.1f}' y='{top - 6}' "
            f"transform='rotate(-45 {x:.1f} {top - 6})'>"
            f"<title>{escape(str(label))}</title>{escape(text)}</text>"
        )
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            colour = "#2563eb" if i == j else "#dc2626"
            x, y = left + j * cell, top + i * cell
            parts.append(
                f"<g class='cell' data-true='{escape(str(labels[i]))}' "
                f"data-predicted='{escape(str(labels[j]))}'>"
                f"<rect x='{x}' y='{y}' width='{cell}' height='{cell}' fill='{colour}' "
                f"fill-opacity='{0.08 + 0.8 * share:.3f}' stroke='#fff'/>"
                f"<text x='{x + cell / 2:.1f}' y='{y + cell / 2 + 4:.1f}' text-anchor='middle' "
                f"fill='{'#fff' if share > 0.55 else '#111'}'>{int(count)}</text></g>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _confusion(report: Mapping[str, Any] | None) -> str:
    confusion = (report or {}).get("confusion_matrix")
    if not isinstance(confusion, Mapping) or not confusion.get("labels"):
        return ""
    labels, matrix = confusion["labels"], confusion.get("matrix")
    heading = "<section id='confusion'><h2>Confusion matrix</h2>"
    if len(labels) > _MATRIX_CLASSES:
        return (
            f"{heading}<p class='note'>{len(labels)} classes: too many for a picture; the matrix "
            "is the card's <code>metrics.confusion_matrix</code>.</p></section>"
        )
    if not (
        isinstance(matrix, list)
        and len(matrix) == len(labels)
        and all(isinstance(row, list) and len(row) == len(labels) for row in matrix)
        and all(isinstance(c, int | float) and c >= 0 for row in matrix for c in row)
    ):
        return (
            f"{heading}<p class='note'>The report's matrix is not a square of counts.</p></section>"
        )
    return (
        f"{heading}<p class='note'>Test split: rows are the true class, columns the predicted "
        f"one.</p>{confusion_svg(labels, matrix)}</section>"
    )


def _values(feature: Mapping[str, Any]) -> str:
    kind = feature.get("kind", "numeric")
    if kind == "numeric":
        low, high = feature.get("min"), feature.get("max")
        text = f"{_number(low)} to {_number(high)}" if low is not None and high is not None else ""
        if feature.get("median") is not None:
            text += f" <small>(median {_number(feature['median'])})</small>"
        return text
    vocabulary = [str(v) for v in feature.get("vocabulary") or []]
    chips = "".join(
        f"<span class='chip'>{escape(v) if v else '<i>blank</i>'}</span>"
        for v in vocabulary[:_VOCABULARY_SHOWN]
    )
    more = len(vocabulary) - _VOCABULARY_SHOWN
    if more > 0:
        chips += f" <small>and {more:,} more</small>"
    return chips


def _features(features: Sequence[Mapping[str, Any]], missing_values: str | None) -> str:
    rows = "".join(
        f"<tr data-feature='{escape(str(f['name']))}'><th>{escape(str(f['name']))}</th>"
        f"<td class='kind'>{escape(str(f.get('kind', 'numeric')))}</td>"
        f"<td class='values'>{_values(f)}</td>"
        f"<td>{'yes' if f.get('nullable') else ('imputed' if missing_values == 'impute' else 'no')}"
        "</td></tr>"
        for f in features
    )
    return (
        f"<section id='features'><h2>Features ({len(features)})</h2>"
        "<table><thead><tr><th>feature</th><th>kind</th><th>training range or vocabulary</th>"
        f"<th>blanks</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _versions(card: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr data-version='{v['version']}'><th>{v['version']}</th>"
        f"<td>{escape(str(v['state']))}{' (loaded)' if v.get('loaded') else ''}</td>"
        f"<td>{escape(', '.join(map(str, v.get('labels') or [])))}</td>"
        f"<td>{escape(str(v.get('reason') or ''))}</td></tr>"
        for v in card.get("versions", [])
    )
    labels = card.get("labels") or {}
    traffic = card.get("traffic") or {}
    notes = []
    # serving.json that could not be applied, and labels naming versions that are not loaded
    problems = [card["serving_error"]] if card.get("serving_error") else []
    problems += [f"label {k}: {v}" for k, v in (card.get("label_errors") or {}).items()]
    if labels:
        notes.append(
            "Labels: "
            + ", ".join(f"{escape(str(k))} → {escape(str(v))}" for k, v in labels.items())
        )
    if traffic.get("canary_percent"):
        notes.append(f"canary {_number(traffic['canary_percent'])} % of unversioned requests")
    if traffic.get("shadow_version") is not None:
        notes.append(
            f"shadow version {traffic['shadow_version']} scores "
            f"{_number(traffic.get('shadow_percent', 0))} %"
        )
    return (
        "<section id='versions'><h2>Versions and labels</h2>"
        "<table><thead><tr><th>version</th><th>state</th><th>labels</th><th>reason</th></tr>"
        f"</thead><tbody>{rows}</tbody></table><p class='note'>{'; '.join(notes)}</p>"
        + "".join(f"<p class='error serving-error'>{escape(str(p))}</p>" for p in problems)
        + "</section>"
    )


def _live(name: str, version: Any) -> str:
    return (
        "<section id='live'><h2>Live counts</h2>"
        f"<div id='live-counts' data-model='{escape(name)}' data-version='{escape(str(version))}'>"
        "<p>Requests answered: <b id='live-requests'>…</b> "
        "<small id='live-statuses'></small></p>"
        "<p>Predictions of this version by label:</p><ul id='live-labels'></ul></div>"
        "<p class='note'>From this replica's <a href='metrics'>/metrics</a> (all its workers), "
        "refreshed every 2 s.</p></section>"
    )


def _example(features: Sequence[Mapping[str, Any]], reference: Any) -> list[str]:
    """The form's first values: the bundle's first reference row (a row of the test split),
    or each feature's median and first category."""
    inputs = (reference or {}).get("inputs") if isinstance(reference, Mapping) else None
    if inputs and len(inputs[0]) == len(features):
        return ["" if v is None else _cell(v) for v in inputs[0]]
    values = []
    for f in features:
        if f.get("kind", "numeric") == "numeric":
            values.append(_cell(f.get("median", f.get("mean", ""))))
        else:
            vocabulary = [v for v in f.get("vocabulary") or [] if v]
            values.append(str(vocabulary[0]) if vocabulary else "")
    return values


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _form(name: str, features: Sequence[Mapping[str, Any]], reference: Any) -> str:
    fields = []
    lists = []
    options = _OPTIONS  # left for the page's datalists
    for i, (f, value) in enumerate(zip(features, _example(features, reference), strict=True)):
        fname, kind = str(f["name"]), f.get("kind", "numeric")
        attributes = f"name='{escape(fname)}' value='{escape(value)}' autocomplete='off'"
        hint = ""
        if kind == "numeric":
            attributes += " inputmode='decimal'"
            if f.get("min") is not None and f.get("max") is not None:
                hint = f"{_number(f['min'])} to {_number(f['max'])}"
        else:
            vocabulary = [str(v) for v in f.get("vocabulary") or [] if v]
            if kind == "boolean":
                vocabulary = ["true", "false"]
            shown = vocabulary[: max(0, min(options, 1000))]
            options -= len(shown)
            lists.append(
                f"<datalist id='values-{i}'>"
                + "".join(f"<option value='{escape(v)}'></option>" for v in shown)
                + "</datalist>"
            )
            attributes += f" list='values-{i}'"
            hint = escape(kind)
        if f.get("nullable"):
            hint = f"{hint}, may be blank" if hint else "may be blank"
        fields.append(
            f"<label><span>{escape(fname)} <small>{hint}</small></span><input {attributes}></label>"
        )
    path = _model_path(name)
    return (
        "<section id='try-it'><h2>Try it</h2>"
        f"<form id='try' data-predict='{escape(path)}/predict' data-explain='{escape(path)}/explain'>"
        f"{''.join(fields)}{''.join(lists)}"
        "<div class='buttons'><button type='submit' id='predict'>Predict</button>"
        "<button type='button' id='explain'>Explain</button></div></form>"
        "<div id='result' aria-live='polite'><p class='note'>The form sends one CSV row to the "
        "model; the answer appears here.</p></div></section>"
    )


def _readable(render: Callable[..., str], section: str, *args: Any) -> str:
    """A section from the report (metrics.json, which no schema checks), or a note that it could
    not be read: a hand-edited report never takes the page down."""
    try:
        return render(*args)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return (
            f"<section id='{section}'><p class='note'>This version's report "
            "(report/metrics.json) could not be read for this section.</p></section>"
        )


# -- the document --------------------------------------------------------------------------------
def _head(title: str, root: str) -> str:
    """The document's head. Its links are relative: to the page's own address (``/``, the
    service's root, however a proxy prefixes it), or to ``root`` (ASGI ``root_path``) when set."""
    base = f"<base href='{escape(root.rstrip('/') + '/')}'>" if root else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>{base}"
        f"<title>{escape(title)} · keras-serve</title><link rel='icon' href='data:,'>"
        f"<style>{_asset('page.css')}</style></head><body>"
    )


def render_page(
    card: Mapping[str, Any], models: Iterable[str], api_key: bool, root: str = ""
) -> str:
    """The page of the model ``card`` (as ``GET /models/{name}`` answers it); ``models`` are
    every served model's names, for the switcher; ``api_key``: the form asks for the key;
    ``root``: the path the service is served under (ASGI ``root_path``)."""
    name = str(card["name"])
    models = list(models)
    title = f"{name} v{card['version']}" if card.get("ready") else f"{name} (not ready)"
    if card.get("ready"):
        metadata = card["metadata"]
        report = card.get("metrics")
        body = (
            "<div class='columns'><div class='main'>"
            + _readable(_metrics, "metrics", report, card.get("threshold"))
            + _readable(_confusion, "confusion", report)
            + _features(card.get("features") or metadata["features"], card.get("missing_values"))
            + _versions(card)
            + "</div><div class='side'>"
            + _form(name, card.get("features") or metadata["features"], metadata.get("reference"))
            + _live(name, card["version"])
            + "</div></div>"
        )
    else:
        reason = card.get("reason") or "no verified version is loaded"
        body = (
            f"<section id='not-ready'><h2>Not ready</h2><p>{escape(str(reason))}</p></section>"
            + _versions(card)
        )
    return (
        _head(title, root) + f"{_header(card, models, api_key)}<main>{body}</main>"
        f"<script>{_asset('page.js')}</script></body></html>"
    )


def render_missing(message: str, models: Iterable[str], root: str = "", ready: bool = True) -> str:
    """A page for a model that is not served (``ready``: others are), or for a service with no
    model ready at all, saying why and linking the models served."""
    links = "".join(f"<li><a href='{escape(_page_url(m))}'>{escape(m)}</a></li>" for m in models)
    title, section = ("Not found", "not-found") if ready else ("No model ready", "not-ready")
    return (
        _head(title, root) + f"<main><section id='{section}'>"
        f"<h1>{title}</h1><p id='error'>{escape(message)}</p><ul>{links}</ul>"
        "<p><a href='docs'>API docs</a></p></section></main></body></html>"
    )
