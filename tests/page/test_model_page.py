"""The model page (``GET /``) and the API docs (``/docs``) in headless Chromium, against real
``python -m service`` processes serving the session's Iris and typed (churn) bundles.

Every page is checked the same way: no request to another host (the browser resolves nothing
but 127.0.0.1), no console error or warning. What the page shows is checked against the
service's own answers: the card (``GET /models/{name}``) for the figures, and
``POST /models/{name}/predict`` of the same record for every answer of the try-it form.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bench.browser import LOOPBACK_NAME, Browser
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

TIMEOUT = 20.0  # for an answer to show: a wait for an event, not a timing check
API_KEY = "page-test-key"
ADMIN_TOKEN = "page-test-admin"

# Rows of the Iris data set (scikit-learn's order): a setosa, versicolors (two near the
# virginica border), virginicas.
IRIS_ROWS = [0, 50, 70, 83, 100, 133]
# Rows of the typed table (tests/conftest.py make_typed_csv): the first ones, and the first
# with a blank age (i % 11 == 3), plan (i % 17 == 5) and member (i % 23 == 7).
CHURN_ROWS = [0, 1, 3, 5, 7, 14]


# -- the servers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(
    session_artifacts: Path,
    iris_bundle: Path,
    typed_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """Iris and churn, Iris the default model."""
    log = tmp_path_factory.mktemp("page-server") / "service.log"
    process = ServerProcess(
        session_artifacts, log, model_name="iris,churn", default_model="iris", grpc_port=0
    )
    with process:
        process.wait_for("/readyz")
        yield process


@pytest.fixture(scope="module")
def guarded(iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Iris as versions 1 and 2 (copies), both loaded, labelled ``stable`` and ``canary``;
    prediction calls need ``API_KEY``."""
    root = tmp_path_factory.mktemp("page-guarded")
    for version in ("1", "2"):
        shutil.copytree(iris_bundle, root / "artifacts" / "iris" / version)
    process = ServerProcess(
        root / "artifacts",
        root / "service.log",
        model_name="iris",
        model_versions="all",
        api_key=API_KEY,
        admin_token=ADMIN_TOKEN,
        grpc_port=0,
    )
    with process:
        process.wait_for("/readyz")
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for label, version in (("stable", 1), ("canary", 2)):
            response = httpx.put(
                f"{process.url}/admin/models/iris/labels/{label}",
                json={"version": version},
                headers=admin,
                timeout=10,
            )
            assert response.status_code == 200, response.text
        yield process


# -- helpers -------------------------------------------------------------------------------------
def card_of(server: ServerProcess, name: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/models/{name}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def by_css(browser: Browser, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.driver.find_element(By.CSS_SELECTOR, selector)


def all_by_css(root: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return root.find_elements(By.CSS_SELECTOR, selector)


def wait(browser: Browser, condition: Any, what: str, timeout: float = TIMEOUT) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser.driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        problems = browser.problems()
        pytest.fail(f"{what}: not within {timeout:.0f} s (console: {problems})")


def open_page(browser: Browser, url: str) -> None:
    """Open ``url`` and wait for the try-it form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.open(url)
    wait(browser, ec.presence_of_element_located((By.ID, "try")), f"{url}: form#try")


def failed_load(url: str, status: int) -> str:
    """How Chromium logs a load that a 4xx answered (as an error, whatever the page does)."""
    return f"{url} - Failed to load resource: the server responded with a status of {status} "


def clean(browser: Browser, allow: tuple[str, ...] = ()) -> None:
    """No request outside 127.0.0.1; no console error or warning but the ``allow``ed."""
    assert browser.outside() == []
    assert browser.problems(allow) == []


def iris_cells() -> list[dict[str, str]]:
    """The Iris data set's rows as typed into a form: each feature's text."""
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    return [{name: f"{frame.iloc[i][name]:g}" for name in frame.columns[:4]} for i in IRIS_ROWS]


def churn_cells(typed_csv: Path) -> list[dict[str, str]]:
    """The typed table's rows, each cell's text (a blank is "")."""
    with typed_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [rows[i] for i in CHURN_ROWS]


def record_of(card: dict[str, Any], cells: dict[str, str]) -> dict[str, Any]:
    """The record ``cells`` stand for, typed as a JSON client sends it: numbers as numbers,
    text as text, a blank as null."""
    record: dict[str, Any] = {}
    for feature in card["features"]:
        text = cells[feature["name"]].strip()
        if text == "":
            record[feature["name"]] = None
        elif feature["kind"] == "numeric":
            record[feature["name"]] = float(text)
        else:
            record[feature["name"]] = text
    return record


def predict(
    server: ServerProcess, name: str, record: dict[str, Any], key: str | None = None
) -> dict[str, Any]:
    """The service's own answer for ``record``, through ``POST /models/{name}/predict``."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(
        f"{server.url}/models/{name}/predict",
        json={"instances": [record]},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def fill(browser: Browser, cells: dict[str, str]) -> None:
    """Type each feature's text into its input of the try-it form (every input cleared)."""
    form = by_css(browser, "form#try")
    for name, text in cells.items():
        (field,) = all_by_css(form, f"input[name='{name}']")
        field.clear()
        if text:
            field.send_keys(text)
        assert field.get_attribute("value") == text


def submit(browser: Browser, button: str = "form#try [type=submit]") -> Any:
    """Submit the form (or press another ``button``); wait for the answer that replaces what
    ``#result`` showed; return ``#result``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    result = by_css(browser, "#result")
    before = all_by_css(result, ":scope > *")
    by_css(browser, button).click()
    if before:
        wait(browser, ec.staleness_of(before[0]), "the answer to replace #result's content")
    wait(
        browser,
        ec.presence_of_element_located((By.CSS_SELECTOR, "#result-label, #result-error")),
        "#result-label or #result-error",
    )
    wait(browser, lambda _: result.get_attribute("aria-busy") is None, "#result done")
    return result


def shown_probabilities(result: Any) -> dict[str, float]:
    """Each class's probability as ``#result`` shows it."""
    shown = {}
    for item in all_by_css(result, "#result-probabilities li[data-name]"):
        value = all_by_css(item, ".value")[0].text.strip()
        shown[item.get_attribute("data-name")] = float(value)
    return shown


def close_to(shown: float, expected: float) -> bool:
    """``shown``, as the page rounds it (4 decimals, or 3 significant digits below 1e-4)."""
    return math.isclose(shown, expected, rel_tol=5e-3, abs_tol=5e-5)


def own_text(browser: Browser, element: Any) -> str:
    """An element's own text, without its children's (an SVG label's ``<title>``)."""
    return str(
        browser.driver.execute_script(
            "return [...arguments[0].childNodes].filter((n) => n.nodeType === 3)"
            ".map((n) => n.data).join('').trim();",
            element,
        )
    )


def numbers_in(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


# -- the card ------------------------------------------------------------------------------------
def test_the_page_names_the_model_and_loads_nothing_from_outside(
    browser: Browser, server: ServerProcess
) -> None:
    card = card_of(server, "iris")
    open_page(browser, f"{server.url}/")  # the default model
    version = str(card["version"])
    assert "iris" in browser.driver.title and version in browser.driver.title
    assert by_css(browser, "h1").text == "iris"
    assert by_css(browser, "#model-version").text == version
    assert by_css(browser, "#model-runtime").text == card["runtime"] == "litert"
    clean(browser)
    # the page is one document: its only other requests are its own calls (/metrics)
    requests = [r for r in browser.requests if not r.url.startswith("data:")]
    assert requests[0].kind == "Document"
    assert all(r.kind in ("Document", "Fetch") for r in requests), requests
    assert all(urlsplit(r.url).path in ("/", "/metrics") for r in requests), requests


def test_the_page_under_a_host_name(browser: Browser, server: ServerProcess) -> None:
    """As a deployed service's page: the same, with nothing asked of another host."""
    open_page(browser, f"http://{LOOPBACK_NAME}:{server.port}/?model=churn")
    assert by_css(browser, "h1").text == "churn"
    clean(browser)


@pytest.mark.parametrize("name", ["iris", "churn"])
def test_test_metrics_and_confusion_matrix_as_the_card_reports_them(
    browser: Browser, server: ServerProcess, name: str
) -> None:
    card = card_of(server, name)
    metrics = card["metrics"]
    open_page(browser, f"{server.url}/?model={name}")
    accuracy = by_css(browser, "#metrics [data-metric='accuracy'] td").text
    assert close_to(float(accuracy), metrics["accuracy"]), accuracy
    per_class = by_css(browser, "#metrics").text
    for label in card["metadata"]["classes"]:
        assert label in per_class

    svg = by_css(browser, "svg#confusion-matrix")
    assert svg.tag_name == "svg"
    labels = metrics["confusion_matrix"]["labels"]
    matrix = metrics["confusion_matrix"]["matrix"]
    names = [own_text(browser, t) for t in all_by_css(svg, ".true-label")]
    predicted = [own_text(browser, t) for t in all_by_css(svg, ".predicted-label")]
    assert names == labels and predicted == labels
    for i, true in enumerate(labels):
        for j, guess in enumerate(labels):
            (cell,) = all_by_css(svg, f"g.cell[data-true='{true}'][data-predicted='{guess}']")
            assert own_text(browser, all_by_css(cell, "text")[0]) == str(matrix[i][j])
    assert len(all_by_css(svg, "g.cell")) == len(labels) ** 2
    rendered = browser.driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", svg
    )
    assert min(rendered) > 50  # drawn, not an empty box
    clean(browser)


@pytest.mark.parametrize("name", ["iris", "churn"])
def test_each_metric_is_shown_once(browser: Browser, server: ServerProcess, name: str) -> None:
    open_page(browser, f"{server.url}/?model={name}")
    shown = [r.get_attribute("data-metric") for r in all_by_css(browser.driver, "[data-metric]")]
    assert len(shown) == len(set(shown)), f"a metric shown twice: {shown}"


@pytest.mark.parametrize("name", ["iris", "churn"])
def test_each_feature_shows_its_kind_range_or_vocabulary(
    browser: Browser, server: ServerProcess, name: str
) -> None:
    card = card_of(server, name)
    open_page(browser, f"{server.url}/?model={name}")
    rows = all_by_css(by_css(browser, "#features"), "tr[data-feature]")
    assert [r.get_attribute("data-feature") for r in rows] == [f["name"] for f in card["features"]]
    for feature, row in zip(card["features"], rows, strict=True):
        assert all_by_css(row, ".kind")[0].text == feature["kind"]
        values = all_by_css(row, ".values")[0].text
        if feature["kind"] == "numeric":
            shown = numbers_in(values)
            assert any(close_to(x, feature["min"]) for x in shown), (feature, values)
            assert any(close_to(x, feature["max"]) for x in shown), (feature, values)
        else:
            chips = [c.text for c in all_by_css(row, ".chip")]
            expected = ["blank" if v == "" else v for v in feature["vocabulary"]]
            assert chips == expected, (feature, chips)
    if name == "churn":  # blanks allowed where training had them
        blanks = {r.get_attribute("data-feature"): r.text for r in rows}
        assert blanks["age"].endswith("yes") and blanks["region"].endswith("no")
    clean(browser)


def test_every_feature_has_an_input_and_categories_a_list_of_values(
    browser: Browser, server: ServerProcess
) -> None:
    card = card_of(server, "churn")
    open_page(browser, f"{server.url}/?model=churn")
    form = by_css(browser, "form#try")
    inputs = all_by_css(form, "input[name]")
    assert [i.get_attribute("name") for i in inputs] == [f["name"] for f in card["features"]]
    assert all(i.tag_name == "input" for i in inputs)
    for feature, field in zip(card["features"], inputs, strict=True):
        if feature["kind"] == "numeric":
            continue
        datalist = by_css(browser, f"datalist#{field.get_attribute('list')}")
        options = [o.get_attribute("value") for o in all_by_css(datalist, "option")]
        assert set(options) == {v for v in feature["vocabulary"] if v}, feature["name"]
    assert len(all_by_css(form, "[type=submit]")) == 1
    clean(browser)


def test_versions_and_labels(browser: Browser, guarded: ServerProcess) -> None:
    card = card_of(guarded, "iris")
    open_page(browser, f"{guarded.url}/")
    assert by_css(browser, "#model-version").text == str(card["version"])
    rows = {
        r.get_attribute("data-version"): r.text
        for r in all_by_css(by_css(browser, "#versions"), "tr[data-version]")
    }
    assert set(rows) == {"1", "2"}
    assert "stable" in rows["1"] and "canary" not in rows["1"]
    assert "canary" in rows["2"] and "stable" not in rows["2"]
    clean(browser)


LIVE_JS = """
const requests = document.getElementById("live-requests").textContent.trim();
const labels = {};
for (const item of document.querySelectorAll("#live-labels li[data-label]")) {
  labels[item.dataset.label] = Number(item.querySelector("b").textContent);
}
return /^\\d+$/.test(requests) ? [Number(requests), labels] : null;
"""


def test_live_counts_follow_the_predictions(
    browser: Browser, server: ServerProcess, typed_csv: Path
) -> None:
    open_page(browser, f"{server.url}/?model=churn")
    requests, labels = wait(browser, lambda d: d.execute_script(LIVE_JS), "the first live counts")
    card = card_of(server, "churn")
    rows = [record_of(card, cells) for cells in churn_cells(typed_csv)[:3]]
    expected = dict(labels)
    for record in rows:
        label = predict(server, "churn", record)["label"]
        expected[label] = expected.get(label, 0) + 1
    # read in one go: a refresh replaces the counts every 2 s
    wait(
        browser,
        lambda d: d.execute_script(LIVE_JS) == [requests + len(rows), expected],
        f"the live counts to show {len(rows)} more requests ({requests} and {labels} before, "
        f"{expected} predicted)",
    )
    clean(browser)


# -- the try-it form -----------------------------------------------------------------------------
def _answer_matches(result: Any, expected: dict[str, Any]) -> None:
    assert all_by_css(result, "#result-label")[0].text == expected["label"]
    shown = shown_probabilities(result)
    assert set(shown) == set(expected["probabilities"])
    for label, probability in expected["probabilities"].items():
        assert close_to(shown[label], probability), (label, shown[label], probability)
    warnings = [w.text for w in all_by_css(result, "#result-warnings li")]
    assert warnings == expected["warnings"]


@pytest.mark.parametrize("name", ["iris", "churn"])
def test_the_form_answers_as_predict_does(
    browser: Browser, server: ServerProcess, typed_csv: Path, name: str
) -> None:
    card = card_of(server, name)
    rows = iris_cells() if name == "iris" else churn_cells(typed_csv)
    open_page(browser, f"{server.url}/?model={name}")
    labels = set()
    for cells in rows:
        cells = {f["name"]: cells[f["name"]] for f in card["features"]}
        expected = predict(server, name, record_of(card, cells))
        fill(browser, cells)
        result = submit(browser)
        _answer_matches(result, expected)
        labels.add(expected["label"])
        sent = [r for r in browser.requests if r.method == "POST"][-1]
        assert urlsplit(sent.url).path == f"/models/{name}/predict"
    assert len(labels) >= 2  # the rows are not all one class
    if name == "churn":  # blank cells were sent and answered with their warnings
        assert any(c == "" for cells in rows for c in cells.values())
    clean(browser)


@pytest.mark.parametrize(
    ("name", "cells"),
    [
        ("iris", {"sepal_length": "50", "sepal_width": "3", "petal_length": "1", "petal_width": "0.2"}),
        ("churn", {"age": "130", "plan": "gold", "region": "south", "member": "", "monthly_spend": "12.5"}),
    ],
    ids=["out-of-range", "unseen-category-and-blank"],
)  # fmt: skip
def test_values_outside_training_show_the_warnings(
    browser: Browser, server: ServerProcess, name: str, cells: dict[str, str]
) -> None:
    card = card_of(server, name)
    expected = predict(server, name, record_of(card, cells))
    assert expected["warnings"]
    open_page(browser, f"{server.url}/?model={name}")
    fill(browser, cells)
    _answer_matches(submit(browser), expected)
    clean(browser)


@pytest.mark.parametrize(
    ("name", "cells"),
    [
        ("iris", {"sepal_length": "abc", "sepal_width": "3", "petal_length": "1", "petal_width": "0.2"}),
        ("churn", {"age": "forty", "plan": "basic", "region": "south", "member": "true", "monthly_spend": "12.5"}),
        ("churn", {"age": "40", "plan": "basic", "region": "", "member": "true", "monthly_spend": "12.5"}),
    ],
    ids=["text-in-a-number", "text-in-a-typed-number", "blank-not-allowed"],
)  # fmt: skip
def test_a_refused_value_shows_the_service_error(
    browser: Browser, server: ServerProcess, name: str, cells: dict[str, str]
) -> None:
    open_page(browser, f"{server.url}/?model={name}")
    fill(browser, cells)
    result = submit(browser)
    assert not all_by_css(result, "#result-label")
    # the service's own answer to what the page sent
    sent = [r for r in browser.requests if r.method == "POST"][-1]
    assert sent.body is not None and sent.status is not None and 400 <= sent.status < 500
    again = httpx.post(
        sent.url.replace(f"http://{urlsplit(sent.url).netloc}", server.url),
        content=sent.body.encode(),
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
        timeout=10,
    )
    assert again.status_code == sent.status
    error = again.json()["error"]
    assert [f for f in cells if f in error], error  # it names the feature at fault
    shown = result.text
    assert error in shown and str(sent.status) in shown, shown
    # a 4xx answer is logged by the browser as a failed load; nothing else is
    clean(browser, allow=(failed_load(sent.url, sent.status),))


@pytest.mark.parametrize("name", ["iris", "churn"])
def test_explain_shows_the_attributions_explain_answers(
    browser: Browser, server: ServerProcess, typed_csv: Path, name: str
) -> None:
    card = card_of(server, name)
    cells = (iris_cells() if name == "iris" else churn_cells(typed_csv))[1]
    cells = {f["name"]: cells[f["name"]] for f in card["features"]}
    response = httpx.post(
        f"{server.url}/models/{name}/explain",
        json={"instances": [record_of(card, cells)]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    expected = response.json()["explanations"][0]
    open_page(browser, f"{server.url}/?model={name}")
    fill(browser, cells)
    result = submit(browser, button="#explain")
    assert all_by_css(result, "#result-label")[0].text == expected["label"]
    shown = {
        item.get_attribute("data-name"): float(all_by_css(item, ".value")[0].text)
        for item in all_by_css(result, "#result-attributions li[data-name]")
    }
    assert set(shown) == set(expected["attributions"])
    for feature, value in expected["attributions"].items():
        assert close_to(shown[feature], value), (feature, shown[feature], value)
    clean(browser)


# -- switching models, a missing one ----------------------------------------------------------------
def test_model_switches_with_the_query_and_the_links(
    browser: Browser, server: ServerProcess
) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, f"{server.url}/?model=churn")
    assert by_css(browser, "h1").text == "churn"
    assert by_css(browser, "form#try input[name='plan']")
    links = {a.text: a for a in all_by_css(browser.driver, "nav#models a")}
    assert set(links) == {"iris", "churn"}
    links["iris"].click()
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == "iris", "the iris page")
    assert urlsplit(browser.driver.current_url).query == "model=iris"
    assert all_by_css(browser.driver, "form#try input[name='sepal_length']")
    clean(browser)


def test_an_unknown_model_is_a_404_page_naming_it(browser: Browser, server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/?model=no-such-model", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    url = f"{server.url}/?model=no-such-model"
    browser.open(url)
    message = by_css(browser, "#error").text
    assert "no-such-model" in message
    served = sorted(a.text for a in all_by_css(browser.driver, "#not-found li a"))
    assert served == ["churn", "iris"]
    assert not all_by_css(browser.driver, "form#try")
    clean(browser, allow=(failed_load(url, 404),))  # the document's own status


# -- API_KEY -------------------------------------------------------------------------------------------
def test_with_an_api_key_the_page_loads_and_the_form_sends_the_key(
    browser: Browser, guarded: ServerProcess
) -> None:
    card = card_of(guarded, "iris")
    open_page(browser, f"{guarded.url}/")
    key = by_css(browser, "#api-key")
    assert key.get_attribute("type") == "password"
    names = [i.get_attribute("name") for i in all_by_css(browser.driver, "form#try input[name]")]
    assert names == [f["name"] for f in card["features"]]  # the key is not a feature
    count = by_css(browser, "#live-requests")  # /metrics needs no key
    wait(browser, lambda _: count.text.strip().isdigit(), "the first live count")
    clean(browser)

    cells = iris_cells()[1]
    fill(browser, cells)
    result = submit(browser)  # no key yet
    assert "401" in result.text and not all_by_css(result, "#result-label")
    key.send_keys(API_KEY)
    expected = predict(guarded, "iris", record_of(card, cells), key=API_KEY)
    _answer_matches(submit(browser), expected)
    clean(browser, allow=(failed_load(f"{guarded.url}/models/iris/predict", 401),))


# -- /docs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", LOOPBACK_NAME])
def test_docs_serve_swagger_ui_from_the_service(
    browser: Browser, server: ServerProcess, host: str
) -> None:
    from selenium.webdriver.common.by import By

    browser.open(f"http://{host}:{server.port}/docs")
    wait(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10,
        "Swagger UI's operations",
    )
    assert "Swagger UI" in browser.driver.title
    paths = {e.text for e in all_by_css(browser.driver, ".opblock-summary-path")}
    assert {"/predict", "/models/{name}/predict", "/models/{name}"} <= {
        p.replace("\u200b", "") for p in paths
    }
    assets = [r for r in browser.requests if r.kind in ("Script", "Stylesheet")]
    assert {urlsplit(r.url).path for r in assets} == {
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    }
    assert all(r.status == 200 and urlsplit(r.url).hostname == host for r in assets)
    clean(browser)


def test_redoc_loads_nothing_from_outside(browser: Browser, server: ServerProcess) -> None:
    from selenium.webdriver.common.by import By

    browser.open(f"{server.url}/redoc")
    wait(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-section-id]")) > 10,
        "ReDoc's operations",
    )
    wait(
        browser,
        lambda d: d.execute_script("return [...document.images].every((i) => i.complete)"),
        "ReDoc's images loaded or failed",
    )
    assert "ReDoc" in browser.driver.title
    clean(browser)
