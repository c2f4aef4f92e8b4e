"""The model registry: finds versions, verifies and loads them, swaps atomically, rolls back.

Availability first, as TensorFlow Serving does it: a new version is loaded and verified
before it replaces the served one, and a version that fails is never served.

Two locks: ``_load_lock`` serializes the slow part (verifying and loading a version, seconds
for Keras); ``_swap_lock`` guards the pointer swap, held for microseconds, so a rollback is
instant even while a load is in progress.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bundle
from service.batching import AdaptiveBatcher
from service.errors import BundleRejected, Conflict, ModelNotReady, NotFound
from service.model import LoadedModel, load_version
from service.settings import Settings

log = logging.getLogger("service.registry")

State = Literal["serving", "available", "rejected"]
Fingerprint = tuple[tuple[str, int, int, int, int], ...]

HELD_REASON = "not loaded automatically after a rollback or a pinned reload; POST /admin/reload"
UNVERIFIED_REASON = "not verified yet"


@dataclass
class VersionStatus:
    """What the registry knows of one version directory."""

    version: int
    state: State
    reason: str | None = None


def fingerprint(directory: Path) -> Fingerprint:
    """Name, size, mtime, ctime and inode of every file: a rejected version is retried only
    when this changes (ctime and inode catch a copy that preserves modification times)."""
    entries = []
    try:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                stat = path.stat()
                entries.append(
                    (
                        path.relative_to(directory).as_posix(),
                        stat.st_size,
                        stat.st_mtime_ns,
                        stat.st_ctime_ns,
                        stat.st_ino,
                    )
                )
    except OSError:
        pass
    return tuple(entries)


class ModelEvents:
    """What the registry tells its observer (the service's metrics); these do nothing.

    ``loaded``, ``rejected``, ``served`` and ``unloaded`` come from the thread that loads or
    swaps; ``batch`` from the event loop's thread.
    """

    def loaded(self, model: LoadedModel) -> None:
        """A version was verified, loaded and swapped in (the first load included)."""

    def rejected(self, version: int, reason: str) -> None:
        """A version failed verification."""

    def served(self, model: LoadedModel) -> None:
        """``model`` now answers unversioned requests (a load, a reload or a rollback)."""

    def unloaded(self, model: LoadedModel) -> None:
        """A version left memory."""

    def batch(self, rows: int) -> None:
        """One model call of ``rows`` rows."""


class Registry:
    """Holds the served model, the previous one (for instant rollback) and every version's status.

    ``current`` is replaced, never mutated: a request that took it keeps a complete version
    until it answers, whatever swaps happen meanwhile.
    """

    def __init__(self, settings: Settings, events: ModelEvents | None = None) -> None:
        self.settings = settings
        self.events = events or ModelEvents()
        self.current: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self._rejected: dict[int, tuple[Fingerprint, str]] = {}
        self._verified: dict[int, Fingerprint] = {}  # versions that loaded, as their files were
        self._start_floor = 0  # versions up to this were on disk at start; polls do not verify them
        # Versions up to this number are not loaded by polling (set by a rollback or by an
        # explicit reload of one version); a newer publication is.
        self._hold = 0
        self._load_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._closed = False
        self.reloads_succeeded = 0
        self.reloads_rejected = 0
        self.last_error: str | None = None

    # -- reading -----------------------------------------------------------------------------
    def versions(self) -> list[int]:
        return bundle.list_versions(self.settings.model_dir)

    def require(self) -> LoadedModel:
        """The served model, or :class:`ModelNotReady` with the reason."""
        model = self.current
        if model is None:
            raise ModelNotReady(self.not_ready_reason())
        return model

    def get(self, version: int | None) -> LoadedModel:
        """The served model, or the loaded version a client asked for (current or previous)."""
        model = self.require()
        if version is None or version == model.version:
            return model
        previous = self.previous
        if previous is not None and previous.version == version:
            return previous
        raise NotFound(f"version {version} of model {self.settings.model_name!r} is not loaded")

    def not_ready_reason(self) -> str:
        name, directory = self.settings.model_name, self.settings.model_dir
        pinned = self.settings.model_version
        rejected = self._rejected.get(pinned) if pinned is not None else None
        if rejected is not None:
            return f"pinned version {pinned} of {name!r} was rejected: {rejected[1]}"
        if not self.versions():
            return f"no version of model {name!r} found under {directory}"
        return f"no valid version of model {name!r}: " + (self.last_error or "all were rejected")

    def statuses(self) -> list[VersionStatus]:
        """Every version found on disk (and any loaded one) with its state, highest first."""
        current, previous = self.current, self.previous
        found = set(self.versions())
        hold = self._hold
        out = []
        for version in sorted(found | {m.version for m in (current, previous) if m}, reverse=True):
            gone = None if version in found else "directory removed; kept in memory"
            rejected = self._rejected.get(version)
            if current is not None and version == current.version:
                out.append(VersionStatus(version, "serving", gone))
            elif rejected is not None:
                out.append(VersionStatus(version, "rejected", rejected[1]))
            elif current is not None and current.version < version <= hold:
                out.append(VersionStatus(version, "available", HELD_REASON))
            elif version not in self._verified:
                out.append(VersionStatus(version, "available", gone or UNVERIFIED_REASON))
            else:
                out.append(VersionStatus(version, "available", gone))
        return out

    # -- loading -----------------------------------------------------------------------------
    def _try_load(self, version: int, force: bool = False) -> LoadedModel | None:
        """Verify and load one version; remember a rejection, its reason and the files' state."""
        directory = self.settings.model_dir / str(version)
        # Taken before loading: a file that changes during the load changes it again later.
        print_ = fingerprint(directory)
        known = self._rejected.get(version)
        if known is not None and known[0] == print_ and not force:
            return None
        key = self.settings.artifact_signing_key
        started = time.monotonic()
        try:
            model = load_version(
                directory,
                runtime=self.settings.model_runtime,
                signing_key=key.get_secret_value() if key else None,
                missing_values=self.settings.missing_values,
                batcher=self._batcher,
                on_batch=self.events.batch,
            )
        except BundleRejected as exc:
            reason = str(exc)
        except Exception as exc:  # a bundle must never take the service down, whatever it holds
            log.exception("unexpected failure loading version %s", version)
            reason = f"cannot be loaded: {type(exc).__name__}"
        else:
            if model.name != self.settings.model_name:
                log.info(
                    "version %s names model %r; serving it as %r",
                    version,
                    model.name,
                    self.settings.model_name,
                )
            self._rejected.pop(version, None)
            self._verified[version] = print_
            log.info("verified version %s in %.2f s", version, time.monotonic() - started)
            return model
        self._rejected[version] = (print_, reason)
        self._verified.pop(version, None)
        self.reloads_rejected += 1
        self.events.rejected(version, reason)
        self.last_error = f"version {version}: {reason}"
        log.warning(
            "rejected version %s of %s: %s (not retried until its files change)",
            version,
            self.settings.model_name,
            reason,
        )
        return None

    def _batcher(self, model: LoadedModel) -> AdaptiveBatcher | None:
        """The Keras runtime's batcher: requests that arrive while a call runs share the next
        one (a call costs the same for 1 row or 100). LiteRT answers a row in microseconds."""
        if model.runtime.name != "keras":
            return None
        settings = self.settings
        return AdaptiveBatcher(
            model.probabilities_sync,
            settings.max_batch_rows,
            settings.batch_wait_ms / 1000,
            self.events.batch,
        )

    def _retire(self, model: LoadedModel, served: bool) -> None:
        # Safe with requests in flight on it: the batcher finishes queued work first and
        # still answers a request that took this version before the swap.
        model.close()
        if served:
            self.events.unloaded(model)

    def _swap(
        self, model: LoadedModel, *, automatic: bool = False, hold: int | None = None
    ) -> bool:
        """Serve ``model``; the served one becomes ``previous``. False if it was not wanted.

        ``automatic`` (a poll) re-checks under the lock that a rollback or reload made while
        the model loaded did not make it unwanted. ``hold`` sets the polling hold with it.
        """
        with self._swap_lock:
            current = self.current
            floor = max(current.version if current else 0, self._hold)
            if self._closed or (automatic and current is not None and model.version <= floor):
                retired = model
            else:
                retired = self.previous
                if retired is model or retired is current:
                    retired = None
                self.previous = current
                self.current = model
                self.reloads_succeeded += 1
                if hold is not None:
                    self._hold = hold
                # Under the lock: another thread's swap or rollback reports after this one.
                self.events.loaded(model)
                self.events.served(model)
        if retired is model:
            self._retire(model, served=False)
            return False
        if retired is not None:
            self._retire(retired, served=True)
        log.info(
            "serving version %s of %s (runtime %s)",
            model.version,
            self.settings.model_name,
            model.runtime.name,
        )
        return True

    def load_initial(self) -> None:
        """At start-up: the pinned version, or the highest one that verifies."""
        with self._load_lock:
            self._start_floor = max(self.versions(), default=0)
            pinned = self.settings.model_version
            candidates = [pinned] if pinned else sorted(self.versions(), reverse=True)
            for version in candidates:
                if not (self.settings.model_dir / str(version)).is_dir():
                    self.last_error = f"pinned version {version} not found"
                    continue
                model = self._try_load(version)
                if model is not None:
                    self._swap(model)
                    return
            log.warning("not ready: %s", self.not_ready_reason())

    def poll(self) -> bool:
        """Load the highest newer version that verifies; True when a swap happened.

        Then, in the time left of the poll interval, verify versions published since start
        and never checked (broken ones published just before a good one, say) so that /model
        shows them rejected.
        """
        if self._closed:
            return False
        swapped = False
        with self._load_lock:
            started = time.monotonic()
            current = self.current
            if self.settings.model_version is None:
                floor = max(current.version if current else 0, self._hold)
                # With nothing served yet, any version may have become valid (files changed).
                candidates = [v for v in self.versions() if current is None or v > floor]
                for version in sorted(candidates, reverse=True):
                    model = self._try_load(version)
                    if model is not None:
                        swapped = self._swap(model, automatic=True)
                        break
            elif current is None and self.settings.model_version in self.versions():
                # A pinned version that was absent or broken at start may appear or be repaired.
                model = self._try_load(self.settings.model_version)
                if model is not None:
                    swapped = self._swap(model, automatic=True)
            self._verify_unchecked(started + max(0.2, self.settings.poll_seconds / 2))
        return swapped

    def _verify_unchecked(self, deadline: float) -> None:
        """Load (then drop) new versions whose current files were never verified, newest first."""
        loaded = {m.version for m in (self.current, self.previous) if m is not None}
        for version in sorted(self.versions(), reverse=True):
            if version <= self._start_floor:
                break
            if version in loaded or self._closed:
                continue
            print_ = fingerprint(self.settings.model_dir / str(version))
            rejected = self._rejected.get(version)
            if self._verified.get(version) == print_ or (rejected and rejected[0] == print_):
                continue
            if time.monotonic() > deadline:
                return
            model = self._try_load(version)
            if model is not None:
                model.close()

    def reload(self, version: int | None = None) -> LoadedModel:
        """Admin reload: the given version, or the highest one; 404 if absent, 409 if rejected.

        Re-verifies even a version rejected before. Reloading one version holds it: polling
        then loads only versions published later. Without a version, polling resumes.
        """
        with self._load_lock:
            available = self.versions()
            current = self.current
            if version is not None:
                if version not in available:
                    raise NotFound(
                        f"version {version} of model {self.settings.model_name!r} not found"
                    )
                hold = max(available)
                if current is not None and version == current.version:
                    with self._swap_lock:
                        self._hold = hold
                    return current
                model = self._loaded(version) or self._try_load(version, force=True)
                if model is None:
                    raise Conflict(
                        f"version {version} was rejected: {self._reason(version)}"
                        + self._still_serving()
                    )
                self._swap(model, hold=hold)
                return model
            if not available:
                raise NotFound(self.not_ready_reason())
            floor = current.version if current else 0
            reasons = []
            for candidate in sorted((v for v in available if v > floor), reverse=True):
                model = self._loaded(candidate) or self._try_load(candidate, force=True)
                if model is not None:
                    self._swap(model, hold=0)
                    return model
                reasons.append(f"version {candidate}: {self._reason(candidate)}")
            if current is None:
                raise Conflict("no version verifies: " + "; ".join(reasons))
            if reasons:  # newer versions exist and every one of them failed
                raise Conflict(
                    "newer versions were rejected: " + "; ".join(reasons) + self._still_serving()
                )
            with self._swap_lock:
                self._hold = 0
            return current

    def _loaded(self, version: int) -> LoadedModel | None:
        previous = self.previous
        return previous if previous is not None and previous.version == version else None

    def _reason(self, version: int) -> str:
        rejected = self._rejected.get(version)
        return rejected[1] if rejected else "unknown"

    def _still_serving(self) -> str:
        current = self.current
        return f"; still serving version {current.version}" if current else ""

    def rollback(self) -> LoadedModel:
        """Swap back to the previously served version, kept in memory; 409 if there is none.

        Instant: it does not wait for a load in progress. Versions published so far are then
        held (not loaded by polling); a later publication is. A second rollback undoes it.
        """
        published = self.versions()
        with self._swap_lock:
            current, previous = self.current, self.previous
            if previous is None or current is None:
                raise Conflict("no previous version to roll back to")
            self.current, self.previous = previous, current
            self._hold = max([self._hold, current.version, *published])
            self.events.served(previous)
        log.info("rolled back from version %s to %s", current.version, previous.version)
        return previous

    def close(self) -> None:
        with self._swap_lock:
            self._closed = True
            models = [m for m in (self.current, self.previous) if m is not None]
        for model in models:
            self._retire(model, served=True)

    # -- polling -----------------------------------------------------------------------------
    async def watch(self) -> None:
        """Poll every POLL_SECONDS, loading off the event loop so requests keep flowing."""
        interval = self.settings.poll_seconds
        next_poll = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
            # A fixed cadence, so a version is found within POLL_SECONDS of its publication;
            # after a poll slower than that (a long load), the next one starts at once.
            next_poll += interval
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # never let the watcher die; the next poll tries again
                log.exception("polling for new versions failed")
            next_poll = max(next_poll, time.monotonic())
