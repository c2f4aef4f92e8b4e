"""The browser for the page tests: the system Chromium, headless, driven by selenium.

Runs whenever ``/usr/bin/chromium``, ``/usr/bin/chromedriver`` and selenium are installed and
otherwise skips, saying why; with ``REQUIRE_BROWSER=1`` (CI) a missing browser is a failure
instead (:func:`tests.page.need_browser`). The browser resolves no host but 127.0.0.1 (and one
name mapped to it, ``bench.browser.LOOPBACK_NAME``), and records its console and every request it
sends (:class:`bench.browser.Browser`, which ``python -m bench.page`` drives too), so a test can
check that a page asked nothing of another host and logged no error or warning.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.browser import Browser
from tests.page import need_browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium per test module (about 0.6 s to start) on a fresh profile,
    1280 x 900; each test ``open``s its page, which forgets what the previous page logged and
    sent."""
    need_browser()
    started = Browser(tmp_path_factory.mktemp("chromium-profile")).start()
    yield started
    started.close()
