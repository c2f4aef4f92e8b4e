"""The model page (``GET /``) in a real browser: how long it takes to load, and its screenshot.

``python -m bench.page [--quick] [--loads N] [--screenshot docs/model-page.png]`` starts one
``python -m service`` (LiteRT, the Iris bundle under ``--artifacts``, trained there first when
there is none, as ``python -m bench`` does) and drives the system Chromium headless through
selenium and chromedriver (Debian's ``chromium`` and ``chromium-driver``):

- ``GET /`` alone: the HTML's time to the last byte, over one keep-alive connection
  (http.client), the floor of any page load;
- ``--loads`` fresh navigations of ``/`` (``about:blank`` in between), first with the browser's
  cache off (a first visit: every asset fetched), then with it on (a visit again); each load's
  Navigation Timing (``performance.getEntriesByType("navigation")``): the HTML received
  (``responseEnd``), ``domContentLoadedEventEnd`` and ``loadEventEnd``, from the navigation's
  ``startTime``. The goal: ``loadEventEnd`` under 1 s, cache off, median and max;
- every load is checked as the page's tests check it: no request leaves 127.0.0.1 (the browser
  resolves no other host: ``--host-resolver-rules``), no console error or warning;
- ``--screenshot PATH``: the full page of the Iris model, 1280 px wide, after one try-it
  prediction (a versicolor row typed into ``<form id="try">``).

Full run: replaces its section of bench/RESULTS.md (``--out`` another file); ``--quick``:
3 loads, printed. The machine is shared: medians, with the max beside them.

The browser is :mod:`bench.browser`'s, as tests/page/ drive it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from bench import report
from bench.browser import HEIGHT, WIDTH, Browser, browser_problem
from bench.servers import HOST, ROOT, Server

SECTION = "## Model page (`GET /`)"
MODEL = "iris"
GOAL_MS = 1000.0  # loadEventEnd, cache off: median and max
FULL_LOADS = 20
QUICK_LOADS = 3
# A versicolor row of the Iris data set, typed into the try-it form for the screenshot.
TRY_ROW = {"sepal_length": "6.4", "sepal_width": "3.2", "petal_length": "4.5", "petal_width": "1.5"}

NAVIGATION_JS = """
const n = performance.getEntriesByType("navigation")[0];
return n ? n.toJSON() : null;
"""


@dataclass
class Options:
    quick: bool
    loads: int
    artifacts: Path
    screenshot: Path | None = None
    command: str = "python -m bench.page"


@dataclass
class Results:
    options: Options
    machine: dict[str, str] = field(default_factory=dict)
    html_ms: list[float] = field(default_factory=list)
    html_bytes: int = 0
    cold: list[dict[str, float]] = field(default_factory=list)  # Navigation Timing, cache off
    warm: list[dict[str, float]] = field(default_factory=list)  # cache on
    requests: list[str] = field(default_factory=list)  # one cache-off load's, "KIND path"
    outside: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    screenshot: str = ""
    errors: int = 0
    seconds: float = 0.0


def time_html(port: int, loads: int) -> tuple[list[float], int]:
    """Milliseconds from sending ``GET /`` to its last byte, ``loads`` times on one keep-alive
    connection after one untimed request; and the HTML's size."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    times, size = [], 0
    try:
        for i in range(loads + 1):
            start = time.perf_counter()
            connection.request("GET", "/", headers={"Accept": "text/html"})
            response = connection.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - start) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET / answered {response.status}: {body[:300]!r}")
            size = len(body)
            if i:
                times.append(elapsed)
    finally:
        connection.close()
    return times, size


def load_page(browser: Browser, url: str) -> dict[str, float]:
    """One fresh navigation of ``url``: its Navigation Timing figures, in ms."""
    browser.driver.get("about:blank")
    browser.driver.get(url)
    deadline = time.monotonic() + 30
    while True:
        timing = browser.driver.execute_script(NAVIGATION_JS)
        if timing and timing.get("loadEventEnd", 0) > 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: no loadEventEnd within 30 s")
        time.sleep(0.01)
    start = timing["startTime"]
    return {
        "response_end": timing["responseEnd"] - start,
        "dom_content_loaded": timing["domContentLoadedEventEnd"] - start,
        "load": timing["loadEventEnd"] - start,
    }


def try_it(browser: Browser, row: dict[str, str], timeout: float = 30) -> str:
    """Type ``row`` into the try-it form, submit it, and return the predicted label shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    form = browser.driver.find_element(By.CSS_SELECTOR, "form#try")
    for name, text in row.items():
        field_ = form.find_element(By.NAME, name)
        field_.clear()
        field_.send_keys(text)
    form.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    label = WebDriverWait(browser.driver, timeout).until(
        ec.visibility_of_element_located((By.ID, "result-label"))
    )
    WebDriverWait(browser.driver, timeout).until(lambda _: label.text.strip())
    return str(label.text.strip())


def save_screenshot(browser: Browser, url: str, path: Path) -> str:
    """The whole page after one try-it prediction, ``browser.width`` px wide, as PNG."""
    import base64

    from selenium.webdriver.support.ui import WebDriverWait

    browser.open(url)
    label = try_it(browser, TRY_ROW)
    # the live counts (refreshed every 2 s) show the prediction just made
    WebDriverWait(browser.driver, 15, poll_frequency=0.1).until(
        lambda d: d.execute_script(
            "const e = document.getElementById('live-requests');"
            "return !e || Number(e.textContent) > 0;"
        )
    )
    height = browser.driver.execute_script(
        "return Math.ceil(Math.max(document.documentElement.scrollHeight, "
        "document.body ? document.body.scrollHeight : 0));"
    )
    # the page laid out at exactly this width (no scrollbar), its whole height in one picture
    metrics = {"width": browser.width, "height": int(height), "deviceScaleFactor": 1}
    browser.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {**metrics, "mobile": False}
    )
    try:
        height = browser.driver.execute_script(
            "return Math.ceil(document.documentElement.scrollHeight);"
        )
        shot = browser.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": browser.width, "height": height, "scale": 1},
            },
        )
    finally:
        browser.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"`{shown}` ({browser.width} x {height} px, after predicting {label!r} for {TRY_ROW})"


def measure(options: Options) -> Results:
    results = Results(options)
    started = time.monotonic()
    results.machine = {
        **report.machine_basics(),
        "load_before": report.loadavg(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        work = Path(tmp)
        env = {"ARTIFACTS_DIR": str(options.artifacts), "MODEL_NAME": MODEL}
        env["MODEL_RUNTIME"] = "litert"
        with Server(["-m", "service"], env, work / "service.log") as server:
            server.wait_ready()
            url = f"{server.url}/"
            report.say(f"GET / alone, {options.loads} times")
            results.html_ms, results.html_bytes = time_html(server.port, options.loads)
            browser = Browser(work / "chromium").start()
            try:
                results.machine["browser"] = f"Chromium {browser.version}"
                load_page(browser, url)  # untimed: the browser's own first start-up
                browser.driver.execute_cdp_cmd("Network.enable", {})
                browser.driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
                report.say(f"{options.loads} loads of / in Chromium, cache off")
                for i in range(options.loads):
                    browser.reset()
                    results.cold.append(load_page(browser, url))
                    _check(browser, results)
                    if i == 0:
                        results.requests = [
                            f"{r.kind} {urlsplit(r.url).path or r.url}"
                            for r in browser.requests
                            if r.url != "about:blank"
                        ]
                browser.driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": False})
                report.say(f"{options.loads} loads of / in Chromium, cache on")
                for _ in range(options.loads):
                    browser.reset()
                    results.warm.append(load_page(browser, url))
                    _check(browser, results)
                if options.screenshot is not None:
                    report.say(f"screenshot of / after one prediction: {options.screenshot}")
                    results.screenshot = save_screenshot(browser, url, options.screenshot)
                    _check(browser, results)
            finally:
                browser.close()
    results.machine["load_after"] = report.loadavg()
    results.seconds = time.monotonic() - started
    return results


def _check(browser: Browser, results: Results) -> None:
    """Count a load that sent a request outside or logged an error or warning."""
    outside, problems = browser.outside(), browser.problems()
    results.outside += [u for u in outside if u not in results.outside]
    results.problems += [p for p in problems if p not in results.problems]
    results.errors += bool(outside or problems)


# -- the report --------------------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), max(values)


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    median, largest = _stats(values)
    return f"{_ms(median)} (max {_ms(largest)})"


def _yes(met: bool, context: bool = False) -> str:
    word = "yes" if met else "no"
    return f"({word})" if context else (word if met else f"**{word}**")


def goals(results: Results) -> list[tuple[str, str, bool, bool]]:
    """(goal, measured, met, context): cache off judged, cache on beside it."""
    out = []
    for values, what, context in (
        (results.cold, "cache off (a first visit)", False),
        (results.warm, "cache on (a visit again)", True),
    ):
        loads = [t["load"] for t in values]
        if not loads:
            continue
        title = f"the model page loads in under {GOAL_MS / 1000:g} s: `loadEventEnd`, {what}"
        if context:
            title = f"({title})"
        out.append((title, _cell(loads), max(loads) < GOAL_MS, context))
    return out


def section(results: Results) -> str:
    """This benchmark's section of RESULTS.md, from its heading to the next."""
    options, machine = results.options, results.machine
    mode = "QUICK (few loads: the figures mean little)" if options.quick else "full"
    out = [
        SECTION,
        "",
        f"Measured by `.venv/bin/{options.command}`; mode: {mode}; {machine['date']}; wall "
        f"time {results.seconds:.0f} s. CPU: {machine['cpu']}, {machine['cores']} cores. "
        f"{machine.get('browser', 'Chromium')} headless (selenium "
        f"{_version('selenium')}). Load average (1, 5, 15 min) before: "
        f"{machine['load_before']}; after: {machine.get('load_after', 'n/a')}. The service: "
        f"LiteRT runtime, model `{MODEL}` only.",
        "",
        "| goal | measured (median, max) | met |",
        "| --- | --- | --- |",
    ]
    rows = goals(results)
    out += [f"| {title} | {measured} | {_yes(met, c)} |" for title, measured, met, c in rows]
    failed = [title for title, _, met, context in rows if not met and not context]
    out += ["", "Every goal holds." if not failed else "Not met: " + "; ".join(failed) + "."]
    if results.errors:
        out += ["", f"**{results.errors} FAILED LOADS** (a request outside, or a console error):"]
        out += [f"- outside: `{url}`" for url in results.outside]
        out += [f"- console: {problem}" for problem in results.problems]
    out += [
        "",
        f"| from the navigation's start ({options.loads} loads each) | cache off | cache on |",
        "| --- | --- | --- |",
    ]
    for key, what in (
        ("response_end", "the HTML received (`responseEnd`)"),
        ("dom_content_loaded", "`domContentLoadedEventEnd`"),
        ("load", "`loadEventEnd`"),
    ):
        cold = _cell([t[key] for t in results.cold])
        warm = _cell([t[key] for t in results.warm])
        out.append(f"| {what} | {cold} | {warm} |")
    out += [
        f"| `GET /` alone: the HTML's last byte (http.client, keep-alive; "
        f"{results.html_bytes:,} bytes) | {_cell(results.html_ms)} | |",
    ]
    if results.requests:
        where = "some outside (above)" if results.outside else "every one to 127.0.0.1"
        listed = ", ".join(f"`{r}`" for r in results.requests)
        out += ["", f"One load's requests (cache off): {len(results.requests)}: {listed}; {where}."]
    if results.screenshot:
        out += ["", f"Screenshot: {results.screenshot}."]
    out += [
        "",
        "### How it is measured",
        "",
        "- One `python -m service` (LiteRT, `MODEL_NAME=iris`, one worker, its other settings "
        "the defaults) on 127.0.0.1; `GET /` alone timed first, then the browser: system "
        "Chromium headless (`--headless=new`, a fresh profile, no background networking, every "
        "host but 127.0.0.1 unresolvable), driven by selenium through chromedriver, "
        f"{WIDTH} x {HEIGHT} px.",
        "- One untimed load, then each timed load a fresh navigation (`about:blank`, then "
        "`/`); its figures from Navigation Timing (`performance.getEntriesByType"
        '("navigation")`), relative to the navigation\'s `startTime`. Cache off: DevTools '
        "`Network.setCacheDisabled` (every asset fetched again); cache on: the same loads "
        "after it is cleared. (A page with its style and script inline, sent with "
        "`Cache-Control: no-store`, does the same work both ways.)",
        "- Each load checked as tests/page/ checks the page: no request outside 127.0.0.1 "
        "(DevTools `Network` events), no console error or warning.",
    ]
    return "\n".join(out) + "\n"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# -- running it ---------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_LOADS} loads, printed")
    parser.add_argument(
        "--loads",
        type=int,
        help=f"timed loads each way (default {FULL_LOADS}; quick {QUICK_LOADS})",
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path(os.environ.get("ARTIFACTS_DIR", "artifacts")),
        help="bundle root; the Iris model is trained there when it has no version",
    )
    parser.add_argument(
        "--screenshot", type=Path, help="save the full page after one prediction (PNG)"
    )
    parser.add_argument(
        "--out", type=Path, help="results file whose section is replaced (default "
        "bench/RESULTS.md; quick: stdout only)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    loads = args.loads or (QUICK_LOADS if args.quick else FULL_LOADS)
    if not 1 <= loads <= 1000:
        parser.error("--loads must be 1-1000")
    problem = browser_problem()
    if problem:
        parser.error(f"no browser to drive: {problem}")
    out = args.out if args.out is not None or args.quick else ROOT / "bench" / "RESULTS.md"
    options = Options(
        quick=args.quick,
        loads=loads,
        artifacts=args.artifacts.resolve(),
        screenshot=args.screenshot.resolve() if args.screenshot else None,
        command=" ".join(["python -m bench.page", *argv]),
    )
    return options, out


def main(argv: list[str] | None = None) -> int:
    from bench.run import ensure_bundle  # bench.run is heavy to import

    options, out = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, report.stop_on_signal)
    ensure_bundle(options.artifacts)
    results = measure(options)
    report.publish(section(results), out, SECTION)
    if results.errors:
        print(f"bench: {results.errors} loads failed the page's checks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
