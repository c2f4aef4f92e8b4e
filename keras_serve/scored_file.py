"""OUT, the scored file: written under a temporary name beside it and renamed at the end, so a
failure leaves no partial OUT; the header of the first answer once, then every answer's rows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keras_serve.predict import PredictError, os_error_reason


# -- the answer file -----------------------------------------------------------------------------
class Output:
    """OUT, written under a temporary name in its directory and renamed when all is written;
    the header of the first answer only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: str | None = None
        self.rows = 0
        directory = path.parent
        if not directory.is_dir():
            raise PredictError(f"the directory of {path} does not exist")
        if path.is_dir():
            raise PredictError(f"output {path} is a directory")
        try:
            self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by commit/discard
                "wb", dir=directory, prefix=f".{path.name}.", suffix=".part", delete=False
            )
        except OSError as exc:
            raise PredictError(f"cannot write in {directory}: {os_error_reason(exc)}") from None

    def write(self, answer: str, rows: int, where: str) -> None:
        """One chunk's CSV answer; its header must be the first answer's."""
        end = _header_end(answer)
        if self.header is None:
            self.header = answer[:end]
            start = 0
        elif answer[:end] != self.header:
            raise PredictError(
                f"the answer for {where} has another header than the rows before it "
                f"({answer[: end - 1][:200]!r}): another model answered them",
                bad_input=False,
            )
        else:
            start = end
        try:
            self.file.write(answer[start:].encode())
        except OSError as exc:
            raise PredictError(f"cannot write {self.path}: {os_error_reason(exc)}") from None
        self.rows += rows

    def commit(self) -> None:
        """Flush, give the file the mode a new file gets (or the old OUT's) and rename it."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.file.name, _mode_for(self.path))
            os.replace(self.file.name, self.path)
        except OSError as exc:
            self.discard()
            raise PredictError(f"cannot write {self.path}: {os_error_reason(exc)}") from None

    def discard(self) -> None:
        self.file.close()
        Path(self.file.name).unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def output(path: Path, data: Path) -> Iterator[Output]:
    """An :class:`Output` renamed to ``path`` when the block ends well, removed otherwise."""
    if path.exists() and data.exists() and os.path.samefile(path, data):
        raise PredictError(f"--out {path} is the data file; write the answers elsewhere")
    out = Output(path)
    try:
        yield out
    except BaseException:
        out.discard()
        raise
    out.commit()


def _header_end(answer: str) -> int:
    """Where the header line of a CSV answer ends (after its newline). csv.writer quotes a
    field with a line break and doubles its quotes, so a newline outside quotes ends it."""
    start = 0
    while True:
        end = answer.find("\n", start)
        if end < 0:
            return len(answer)
        if answer.count('"', 0, end) % 2 == 0:
            return end + 1
        start = end + 1
