"""The pages for people, in a real browser: the model page (``GET /``) and the API docs."""

from __future__ import annotations

from bench.browser import browser_problem
from tests.support import require


def need_browser() -> None:
    """Skip, saying why, when Chromium, chromedriver or selenium is missing; fail instead with
    ``REQUIRE_BROWSER=1`` (CI), as ``REQUIRE_DOCKER=1`` does for the Docker image tests."""
    require(browser_problem(), "REQUIRE_BROWSER", "browser tests")
