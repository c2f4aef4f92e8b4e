"""The manual's links resolve from the page they are on: files, and anchors in Markdown files;
paths into the repository named in code spans exist; every page of docs/ is in the README's
index."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.docs.markdown import ROOT, anchors, code_spans, links, pages, prose

PAGES = pages()
# Top-level directories of the repository: a code span starting with one names a path in it.
TOP = ("bench", "bundle", "deploy", "docs", "fuzz", "keras_serve", "service", "tests", "training")


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for line, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # http:, mailto: ...: not checked offline
        path, _, fragment = target.partition("#")
        file = (ROOT / page).parent / unquote(path) if path else ROOT / page
        if not file.exists():
            broken.append(f"{page}:{line}: {target}: no {os.path.relpath(file, ROOT)}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{page}:{line}: {target}: no heading #{fragment} in {path or page}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_repository_paths_in_code_exist(page: Path) -> None:
    missing = []
    for line, span in code_spans(page):
        if not re.fullmatch(rf"(?:{'|'.join(TOP)}|\.ci)/[\w./-]*", span):
            continue
        if not (ROOT / span).exists():
            missing.append(f"{page}:{line}: `{span}`")
    assert not missing, "\n".join(missing)


def test_readme_indexes_every_page() -> None:
    linked = {target.partition("#")[0] for _, target in links("README.md")}
    unlisted = [str(p) for p in PAGES[1:] if str(p) not in linked]
    assert not unlisted, f"README.md's Documentation section does not link {unlisted}"


def test_each_page_has_one_title() -> None:
    for page in PAGES:
        titles = [line for _, line in prose(page) if line.startswith("# ")]
        assert len(titles) == 1, (page, titles)
