"""The pages for people, in a real browser: the model page (``GET /``) and the API docs."""

from __future__ import annotations

import os

import pytest

from bench.browser import browser_problem


def need_browser() -> None:
    """Skip, saying why, when Chromium, chromedriver or selenium is missing; fail instead with
    ``REQUIRE_BROWSER=1`` (CI), as ``REQUIRE_DOCKER=1`` does for the Docker image tests."""
    problem = browser_problem()
    if problem:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1, but {problem}", pytrace=False)
        pytest.skip(f"browser tests skipped: {problem} (REQUIRE_BROWSER=1 makes this fail)")
