"""README.md's settings table is the one service/settings_doc.py generates from ``Settings``."""

from __future__ import annotations

import subprocess
import sys

from service.settings import Settings
from service.settings_doc import END, START, current_table, main, settings_table
from tests.docs.markdown import ROOT

README = ROOT / "README.md"


def test_readme_table_is_the_generated_one() -> None:
    assert current_table(README.read_text()) == settings_table(), (
        "README.md's settings table is out of date: run python -m service.settings_doc "
        "--write README.md"
    )


def test_every_setting_has_a_row_with_a_description() -> None:
    rows = [line for line in settings_table().splitlines()[2:]]
    names = [row.split("|")[1].strip().strip("`") for row in rows]
    assert names == [name.upper() for name in Settings.model_fields]
    for name, info in Settings.model_fields.items():
        assert info.description, f"Settings.{name} has no description for the README"
        assert f"`{name.upper()}`" in current_table(README.read_text())


def test_check_and_write(tmp_path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"# x\n\n{START}\n| stale |\n{END}\n\nafter\n")
    assert main(["--check", str(page)]) == 1
    assert main(["--write", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# x\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert main(["--check", str(page)]) == 0
    (tmp_path / "plain.md").write_text("no markers\n")
    assert main(["--check", str(tmp_path / "plain.md")]) == 1


def test_command_line_check_is_one_line(tmp_path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"{START}\n| stale |\n{END}\n")
    result = subprocess.run(
        [sys.executable, "-m", "service.settings_doc", "--check", str(page)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "--write" in result.stderr
