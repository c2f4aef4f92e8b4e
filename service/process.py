"""Process-wide settings each worker applies as it starts: the allocator and the open-file limit.

- glibc's malloc gives freed memory back to the kernel as soon as 128 KiB to 32 MiB of it is free
  at the top of the heap (its default, adapted as it goes), so the next large request touches
  every page of its arrays again, one page fault each: a 10,000-row answer spent half its time
  there. The service keeps up to ``TRIM_BYTES`` free and maps only blocks above ``MMAP_BYTES``
  on their own, as TensorFlow Serving's and Triton's allocators (tcmalloc, jemalloc) do. The
  cost is that memory freed after a large request stays with the process, up to ``TRIM_BYTES``.
  An operator's own ``MALLOC_*`` tunables are left alone.
- The soft limit on open files is raised to the hard one, so that ``MAX_CONNECTIONS`` (not the
  soft limit, often 1024) is what refuses connections.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import resource

log = logging.getLogger("service")

MMAP_BYTES = 16 * 1024 * 1024
TRIM_BYTES = 64 * 1024 * 1024
# mallopt's parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OPERATOR_TUNABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def tune_allocator(environ: dict[str, str] | None = None) -> bool:
    """Keep freed memory for the next request (see the module's docstring); True if applied.
    Not on another C library, nor when the operator set glibc's malloc tunables."""
    environ = os.environ if environ is None else environ
    if platform.libc_ver()[0] != "glibc" or any(name in environ for name in _OPERATOR_TUNABLES):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES) == 1 and applied
    except (OSError, AttributeError):
        return False


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux caps the number at fs.nr_open (2**20 by default) even when the hard limit is infinite.
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d: %s", soft, exc)
        return soft
    return wanted


def prepare_worker() -> None:
    """Both of the above, at a worker's start."""
    tune_allocator()
    raise_open_file_limit()
