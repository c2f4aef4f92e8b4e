"""The manual's pages read as the tests need them: fenced blocks with the section they are in,
headings and their anchors (GitHub's slugs), links and code spans."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL = ("sh", "bash", "shell", "console")


def pages() -> list[Path]:
    """README.md, then every page of docs/ (paths relative to the repository)."""
    return [Path("README.md"), *sorted(p.relative_to(ROOT) for p in (ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it is, its language and text, and the block right after it
    when only blank lines separate them (a ```json block there shows the command's answer)."""

    page: str
    line: int  # of the opening fence, 1-based
    end: int  # of the closing fence
    language: str
    text: str
    section: str  # the nearest heading above, without its #s and backticks
    ordinal: int  # 1 for the first block of its language family in its section
    following: Block | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.page, self.section, self.ordinal)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@cache
def blocks(page: str) -> tuple[Block, ...]:
    """Every fenced block of ``page``, in order."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    section, counts = "", {}
    i = 0
    while i < len(lines):
        heading = _HEADING.match(lines[i])
        fence = _FENCE.match(lines[i])
        if heading:
            section = heading.group(2).replace("`", "")
            counts = {}
        elif fence:
            start, language = i, fence.group(1).lower()
            i += 1
            body = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"{page}:{start + 1}: a fence that is never closed")
            family = "shell" if language in SHELL else language
            counts[family] = counts.get(family, 0) + 1
            text = "\n".join(body) + "\n" if body else ""
            found.append(Block(page, start + 1, i + 1, language, text, section, counts[family]))
        i += 1
    # Link each block to the next one when only blank lines lie between them.
    linked: list[Block] = []
    for index in range(len(found) - 1, -1, -1):
        block = found[index]
        after = linked[0] if linked else None
        between = lines[block.end : after.line - 1] if after is not None else ["-"]
        if all(not line.strip() for line in between):
            block = Block(**{**block.__dict__, "following": after})
        linked.insert(0, block)
    return tuple(linked)


def shell_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(str(page)) if b.language in SHELL]


def python_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(str(page)) if b.language == "python"]


def count_fences(page: str, languages: tuple[str, ...]) -> int:
    """Opening fences of these languages, counted on the raw text (indented ones too), as a
    check on :func:`blocks`."""
    text = (ROOT / page).read_text(encoding="utf-8")
    names = "|".join(map(re.escape, languages))
    return len(re.findall(rf"^[ \t]*```[ \t]*(?:{names})[ \t]*$", text, re.MULTILINE))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose(page: str | Path) -> list[tuple[int, str]]:
    """The lines outside fenced blocks, numbered from 1."""
    out, fenced = [], False
    for number, line in enumerate((ROOT / page).read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown file defines: its headings' slugs (repeated ones numbered as
    GitHub numbers them) and explicit ``<a id=...>``/``name=`` anchors."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose(path):
        heading = _HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return found


_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)")


def _without_code_spans(line: str) -> str:
    return re.sub(r"(`+)(?:(?!\1).)+\1", "", line)


def links(page: str | Path) -> list[tuple[int, str]]:
    """Every link and image target outside code: inline ``[text](target)`` and reference
    definitions ``[name]: target``."""
    found = []
    for number, line in prose(page):
        text = _without_code_spans(line)
        found += [(number, m.group(1)) for m in _LINK.finditer(text)]
        reference = _REFERENCE.match(text)
        if reference:
            found.append((number, reference.group(1)))
    return found


def code_spans(page: str | Path) -> list[tuple[int, str]]:
    """The inline code spans of the prose (table cells included)."""
    found = []
    for number, line in prose(page):
        found += [(number, m.group(2)) for m in re.finditer(r"(`+)((?:(?!\1).)+)\1", line)]
    return found
