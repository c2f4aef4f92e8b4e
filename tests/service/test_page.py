"""The model page (``GET /``) and the offline API docs, through the app on a real Iris bundle.

What a browser does with them (the form, the live counts, no console errors, no request
elsewhere) is tested in real Chromium: tests/page/."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.page import confusion_svg, render_page
from service.settings import Settings


@pytest.fixture
def client(artifacts_copy: Path) -> Iterator[TestClient]:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="litert")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class _Elements(HTMLParser):
    """Every element's tag and attributes, and the text of each inline script and style."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._open = tag if tag in self.inline else None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.inline[self._open].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def find(self, tag: str | None = None, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.elements
            if (tag is None or t == tag) and all(a.get(k) == v for k, v in attrs.items())
        ]


def _parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_shows_the_served_models_card(client: TestClient) -> None:
    card = client.get("/models/iris").json()
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    page = _parse(html)
    assert "<title>iris v1 · keras-serve</title>" in html
    assert f"version <b id='model-version'>{card['version']}</b>" in html
    assert f"runtime <b id='model-runtime'>{card['runtime']}</b>" in html
    accuracy = card["metrics"]["accuracy"]
    assert f"<tr data-metric='accuracy'><th>accuracy</th><td>{accuracy:.4f}</td></tr>" in html
    for feature in card["features"]:
        row = re.search(rf"<tr data-feature='{feature['name']}'>(.*?)</tr>", html)
        assert row is not None, feature["name"]
        assert "<td class='kind'>numeric</td>" in row.group(1)
        assert f"{feature['min']:g} to {feature['max']:g}" in row.group(1)
    # The versions table, one row per version found.
    assert page.find("tr", **{"data-version": "1"})
    assert "serving (loaded)" in html


def test_the_confusion_matrix_is_a_picture_of_the_reports_counts(client: TestClient) -> None:
    confusion = client.get("/models/iris").json()["metrics"]["confusion_matrix"]
    html = client.get("/").text
    svg = re.search(r"<svg id='confusion-matrix'.*?</svg>", html, re.S)
    assert svg is not None
    cells = re.findall(
        r"<g class='cell' data-true='([^']*)' data-predicted='([^']*)'>.*?>(\d+)</text></g>",
        svg.group(0),
    )
    labels = confusion["labels"]
    expected = [
        (labels[i], labels[j], str(count))
        for i, row in enumerate(confusion["matrix"])
        for j, count in enumerate(row)
    ]
    assert cells == expected


def test_the_form_has_one_input_per_feature_filled_with_a_training_row(
    client: TestClient,
) -> None:
    card = client.get("/models/iris").json()
    page = _parse(client.get("/").text)
    assert page.find("form", id="try")
    inputs = [a for t, a in page.elements if t == "input" and a.get("name")]
    assert [a["name"] for a in inputs] == [f["name"] for f in card["features"]]
    reference = card["metadata"]["reference"]["inputs"][0]
    assert [float(a["value"] or "nan") for a in inputs] == reference
    assert page.find("button", type="submit")
    assert page.find(id="result")
    # Without API_KEY, no key field.
    assert not page.find("input", id="api-key")


def test_the_page_loads_nothing_but_itself(client: TestClient) -> None:
    """No external asset: no src or href leaves the service; the policy allows exactly the
    inline script and style, by their hashes, and connections to this origin."""
    response = client.get("/")
    page = _parse(response.text)
    for _, attrs in page.elements:
        for key in ("src", "href", "action"):
            value = attrs.get(key)
            if value is not None:  # relative to <base>, the service's root
                assert "://" not in value and not value.startswith("//"), (key, value)
    policy = response.headers["content-security-policy"]
    (script,) = page.inline["script"]
    (style,) = page.inline["style"]
    assert f"script-src {_hash(script)}" in policy
    assert f"style-src {_hash(style)}" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_another_model_by_name_and_an_unknown_one(client: TestClient) -> None:
    assert client.get("/?model=iris").status_code == 200
    missing = client.get("/?model=nosuch")
    assert missing.status_code == 404
    assert "model &#x27;nosuch&#x27; not found" in missing.text
    assert "href='./?model=iris'" in missing.text


def test_links_follow_the_root_path_behind_a_proxy(artifacts_copy: Path) -> None:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="litert")
    with TestClient(create_app(settings), root_path="/serving") as client:
        html = client.get("/").text
    assert "<base href='/serving/'>" in html
    assert "data-predict='models/iris/predict'" in html
    with TestClient(create_app(settings)) as client:  # no root_path: relative to the page
        assert "<base" not in client.get("/").text


def test_a_page_with_no_model_says_why(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    named = Settings(artifacts_dir=tmp_path / "empty", model_name="iris")
    with TestClient(create_app(named)) as client:  # a named model with no version yet
        response, ready = client.get("/"), client.get("/readyz").json()
    assert response.status_code == 503
    assert "<section id='not-ready'><h2>Not ready</h2>" in response.text
    assert escape(ready["error"]) in response.text  # the reason, as /readyz gives it
    every = Settings(artifacts_dir=tmp_path / "empty", model_name="*")
    with TestClient(create_app(every)) as client:  # no model at all
        response, ready = client.get("/"), client.get("/readyz").json()
    assert response.status_code == 503
    assert "<h1>No model ready</h1>" in response.text and "Not found" not in response.text
    assert escape(ready["error"]) in response.text


def test_with_an_api_key_the_form_asks_for_it(artifacts_copy: Path) -> None:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="litert", api_key="k" * 16)
    with TestClient(create_app(settings)) as client:
        page = _parse(client.get("/").text)  # the page itself needs no key
    (key,) = page.find("input", id="api-key")
    assert key["type"] == "password"
    assert key.get("name") is None  # not a feature: the form's inputs stay one per feature


def test_names_from_the_training_data_are_escaped() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    card = {
        "name": "m",
        "ready": True,
        "version": 1,
        "runtime": "litert",
        "versions": [{"version": 1, "state": "serving", "loaded": True, "labels": [hostile]}],
        "labels": {hostile: 1},
        "metadata": {
            "target": hostile,
            "task": "multiclass",
            "classes": [hostile, "b"],
            "features": [],
            "reference": None,
        },
        "features": [
            {"name": hostile, "kind": "categorical", "vocabulary": [hostile, ""]},
            {"name": "x'y", "kind": "numeric", "min": 0.0, "max": 1.0},
        ],
        "metrics": {
            "accuracy": 0.5,
            "per_class": {hostile: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}},
            "confusion_matrix": {"labels": [hostile, "b"], "matrix": [[1, 0], [1, 0]]},
        },
    }
    html = render_page(card, ["m", hostile], api_key=False)
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "name='x&#x27;y'" in html


def test_the_confusion_picture_shades_by_row_share() -> None:
    svg = confusion_svg(["a", "b"], [[3, 1], [0, 0]])
    opacities = [float(x) for x in re.findall(r"fill-opacity='([0-9.]+)'", svg)]
    assert opacities == [
        pytest.approx(0.08 + 0.8 * 0.75),
        pytest.approx(0.08 + 0.8 * 0.25),
        0.08,
        0.08,
    ]


def test_the_api_docs_load_their_files_from_the_service(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text)
    assert "/docs/assets/swagger-ui-bundle.js" in assets
    assert "/docs/assets/swagger-ui.css" in assets
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 500, asset
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "https://" not in redoc.text
    (script,) = re.findall(r"""<script src=["']([^"']+)["']""", redoc.text)
    assert script == "/docs/redoc.standalone.js"
    patched = client.get(script)
    assert patched.status_code == 200 and len(patched.content) > 500_000
    assert b"cdn.redoc.ly" not in patched.content  # its logo, the one outside address it loads
    assert client.get("/docs/oauth2-redirect").status_code == 200
    # Pages are not API operations.
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths)


def test_a_binary_models_threshold_is_the_served_one_once() -> None:
    card = {
        "name": "churn",
        "ready": True,
        "version": 2,
        "runtime": "litert",
        "threshold": 0.3,  # served: moved from the report's 0.5
        "metadata": {"target": "churned", "task": "binary", "classes": ["no", "yes"]},
        "features": [{"name": "age", "kind": "numeric", "min": 1.0, "max": 9.0}],
        "metrics": {"accuracy": 0.85, "roc_auc": 0.92, "positive_class": "yes", "threshold": 0.5},
    }
    html = render_page(card, ["churn"], api_key=False)
    (row,) = re.findall(r"<tr data-metric='threshold'>(.*?)</tr>", html)
    assert "0.3000" in row and "'yes'" in row
    assert "(positive class 'yes')" in html


def _card(**changes: object) -> dict:
    card: dict = {
        "name": "m",
        "ready": True,
        "version": 1,
        "runtime": "litert",
        "metadata": {"target": "t", "task": "multiclass", "classes": ["a", "b"]},
        "features": [{"name": "x", "kind": "numeric", "min": 0.0, "max": 1.0}],
        "metrics": {
            "accuracy": 0.5,
            "confusion_matrix": {"labels": ["a", "b"], "matrix": [[1, 0], [0, 1]]},
        },
    }
    card.update(changes)
    return card


@pytest.mark.parametrize(
    "metrics",
    [
        {"accuracy": 0.5, "confusion_matrix": {"labels": ["a", "b"]}},  # no matrix
        {"confusion_matrix": {"labels": ["a"], "matrix": [[1, 2]]}},  # wider than its labels
        {"confusion_matrix": {"labels": ["a"], "matrix": [[None]]}},
        {"confusion_matrix": {"labels": ["a", "b"], "matrix": "xx"}},
        ["not", "a", "mapping"],
    ],
)
def test_a_report_that_cannot_be_read_is_a_note_not_an_error(metrics: object) -> None:
    html = render_page(_card(metrics=metrics), ["m"], api_key=False)
    assert "<form id='try'" in html  # the rest of the page is there
    assert "could not be read" in html or "not a square of counts" in html


def test_big_models_make_a_bounded_page() -> None:
    classes = [f"class {i}" for i in range(300)]
    matrix = [[1 if i == j else 0 for j in range(300)] for i in range(300)]
    features = [
        {"name": f"f{i}", "kind": "categorical", "vocabulary": [f"w{j}" for j in range(10_000)]}
        for i in range(50)
    ]
    card = _card(
        features=features,
        metrics={"confusion_matrix": {"labels": classes, "matrix": matrix}},
        metadata={"target": "t", "task": "multiclass", "classes": classes},
    )
    html = render_page(card, ["m"], api_key=False)
    assert "300 classes: too many for a picture" in html and "<svg" not in html
    assert html.count("<option") == 5000  # the page's budget, not 50 x 1,000
    assert len(html) < 1_000_000
    assert html.count("<input name=") == 50  # every feature still has its input


def test_a_numeric_feature_without_a_range_and_the_serving_errors() -> None:
    card = _card(
        features=[{"name": "x", "kind": "numeric", "nullable": True}],
        serving_error="serving.json: label 'stable' names version 9, which does not exist",
        label_errors={"canary": "version 3 is not loaded"},
    )
    html = render_page(card, ["m"], api_key=False)
    assert "None" not in html
    assert "<small>may be blank</small>" in html
    assert "serving.json: label &#x27;stable&#x27; names version 9" in html
    assert "label canary: version 3 is not loaded" in html
