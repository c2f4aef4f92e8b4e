"""Debian's Chromium, headless, driven through selenium and chromedriver: the one browser
harness of the model page's benchmark (``bench/page.py``) and its tests (``tests/page/``), so
both launch it the same way. It records the console and every request the page sends, and
resolves no host but 127.0.0.1, so a page that asks for anything outside fails loudly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.servers import HOST

WIDTH, HEIGHT = 1280, 900  # the window
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Every host but 127.0.0.1 fails to resolve: a page that asks for anything outside fails loudly
# (a failed request, a console error) instead of quietly depending on the network. One name is
# mapped to 127.0.0.1 too, to load a page as a deployed service's, under a host name: scripts
# that treat localhost and 127.0.0.1 apart (Swagger UI's online validator badge) show their
# other side there.
LOOPBACK_NAME = "keras-serve.test"
HOST_RULES = f"MAP {LOOPBACK_NAME} 127.0.0.1 , MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in CI and in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    f"--host-resolver-rules={HOST_RULES}",
)
# Requests that never reach a network: the page's own data: URLs, blobs, about:blank, and the
# browser's built-in chrome:// pages.
LOCAL_SCHEMES = {"data", "blob", "about", "chrome"}
PROBLEM_LEVELS = {"SEVERE", "WARNING"}


def browser_problem() -> str | None:
    """Why the browser cannot be driven here, or None when Chromium, chromedriver and selenium
    are all installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return (
            f"{' and '.join(missing)} not installed (apt-get install -y --no-install-recommends "
            "chromium chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@dataclass
class Request:
    """One request the browser sent, from its performance log (DevTools ``Network`` events)."""

    url: str
    method: str
    kind: str = ""  # Document, Script, Stylesheet, Fetch, Image, ...
    body: str | None = None  # what it posted (DevTools gives small bodies)
    status: int | None = None
    error: str | None = None  # net::ERR_... when it failed

    @property
    def outside(self) -> bool:
        """True when it went (or tried to go) anywhere but 127.0.0.1."""
        parts = urlsplit(self.url)
        return parts.scheme not in LOCAL_SCHEMES and parts.hostname not in (HOST, LOOPBACK_NAME)


@dataclass
class Browser:
    """Headless Chromium driven by selenium, recording what each page does: its console
    (``goog:loggingPrefs`` browser ALL) and its requests (the performance log)."""

    user_data_dir: Path
    width: int = WIDTH
    height: int = HEIGHT
    driver: Any = None
    console: list[dict[str, Any]] = field(default_factory=list)
    _requests: dict[str, Request] = field(default_factory=dict)

    def start(self) -> Browser:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.user_data_dir}")
        options.add_argument(f"--window-size={self.width},{self.height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
        self.driver.set_page_load_timeout(60)
        self.reset()  # the start page's own requests (chrome://new-tab-page...)
        return self

    @property
    def version(self) -> str:
        return str(self.driver.capabilities.get("browserVersion", "unknown"))

    def collect(self) -> None:
        """Move the browser's new log entries into ``console`` and ``requests``."""
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message["method"], message.get("params", {})
            if method == "Network.requestWillBeSent":
                request = params["request"]
                self._requests[params["requestId"]] = Request(
                    request["url"],
                    request["method"],
                    params.get("type", ""),
                    request.get("postData"),
                )
            elif method == "Network.responseReceived" and params["requestId"] in self._requests:
                self._requests[params["requestId"]].status = params["response"]["status"]
            elif method == "Network.loadingFailed" and params["requestId"] in self._requests:
                self._requests[params["requestId"]].error = params.get("errorText", "failed")

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.collect()
        self.console.clear()
        self._requests.clear()

    def open(self, url: str) -> None:
        """Leave the current page, forget its records, then load ``url`` (returns after its
        load event)."""
        self.driver.get("about:blank")
        self.reset()
        self.driver.get(url)

    @property
    def requests(self) -> list[Request]:
        self.collect()
        return list(self._requests.values())

    def outside(self) -> list[str]:
        """The URLs of every request that went anywhere but 127.0.0.1."""
        return [r.url for r in self.requests if r.outside]

    def problems(self, allow: tuple[str, ...] = ()) -> list[str]:
        """Console errors and warnings (and failed loads, which Chromium logs as errors),
        except those whose message contains one of ``allow``."""
        self.collect()
        return [
            f"{e['level']} {e.get('source', '')}: {e['message']}"
            for e in self.console
            if e["level"] in PROBLEM_LEVELS and not any(text in e["message"] for text in allow)
        ]

    def close(self) -> None:
        if self.driver is not None:
            self.driver.quit()
            self.driver = None


# -- the measurements --------------------------------------------------------------------------
