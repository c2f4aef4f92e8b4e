"""How SHUTDOWN_TIMEOUT_SECONDS is shared, without a server: requests in flight get all but the
second the exit takes (half of it below 2 s), and uvicorn is given that drain. The real server
keeping to it is ``test_shutdown.py`` (slow)."""

from __future__ import annotations

import pytest

from service.__main__ import server_options
from service.settings import Settings


@pytest.mark.parametrize(
    ("timeout", "drain"), [(20, 19), (10, 9), (3, 2), (2, 1), (1.5, 0.75), (1, 0.5)]
)
def test_requests_get_all_but_a_second_of_the_shutdown_timeout(
    timeout: float, drain: float
) -> None:
    settings = Settings(shutdown_timeout_seconds=timeout)
    assert settings.drain_seconds == drain
    assert server_options(settings)["timeout_graceful_shutdown"] == drain
