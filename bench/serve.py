"""``python -m bench.serve MODULE:FACTORY``: run a reference app exactly as the service runs.

The server settings come from :func:`service.__main__.server_options`, and the imports are
frozen out of garbage collection as ``python -m service`` does, so the ceiling, the tutorial
baseline and the service differ only in the app they serve.
"""

from __future__ import annotations

import sys

import uvicorn

from service.__main__ import freeze_imports, runtime_modules, server_options
from service.settings import Settings


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m bench.serve MODULE:FACTORY", file=sys.stderr)
        return 2
    settings = Settings()
    modules = [argv[0].split(":")[0]]  # the app's module, and the runtime if the app has one
    if settings.model_runtime is not None:
        modules += runtime_modules(settings)
    freeze_imports(modules, settings.workers)
    uvicorn.run(argv[0], factory=True, **server_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
