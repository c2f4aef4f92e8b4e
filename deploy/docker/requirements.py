"""Print the project's requirements for the given extras, one a line.

The Dockerfile installs these in a layer of their own, so that a change to the source does not
reinstall TensorFlow. Self-references such as ``keras-serve[keras]`` are expanded.

Usage: python deploy/docker/requirements.py serve > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """Base dependencies plus those of ``extras``, self-references expanded, duplicates dropped."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    self_ref = re.compile(rf"{re.escape(project['name'])}\s*\[([^\]]+)\]\s*$")
    seen: set[str] = set()
    found: list[str] = list(project.get("dependencies", []))

    def add(extra: str) -> None:
        if extra in seen:
            return
        if extra not in optional:
            raise SystemExit(f"requirements.py: no extra {extra!r} in {pyproject}")
        seen.add(extra)
        for requirement in optional[extra]:
            match = self_ref.match(requirement)
            if match:
                for inner in match.group(1).split(","):
                    add(inner.strip())
            else:
                found.append(requirement)

    for extra in extras:
        add(extra)
    return list(dict.fromkeys(found))


if __name__ == "__main__":
    print("\n".join(requirements(Path("pyproject.toml"), sys.argv[1:])))
