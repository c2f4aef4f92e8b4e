"""``python -m service``: run uvicorn on the app factory with settings from the environment."""

from __future__ import annotations

import sys

import uvicorn

from service.settings import Settings


def main() -> int:
    settings = Settings()
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
