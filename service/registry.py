"""The model registry: finds versions, verifies and loads them, swaps atomically, rolls back.

Availability first, as TensorFlow Serving does it: a new version is loaded and verified
before it replaces the served one, and a version that fails is never served.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bundle
from service.errors import BundleRejected, Conflict, ModelNotReady, NotFound
from service.model import LoadedModel, load_version
from service.settings import Settings

log = logging.getLogger("service.registry")

State = Literal["serving", "available", "rejected", "held"]
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass
class VersionStatus:
    """What the registry knows of one version directory."""

    version: int
    state: State
    reason: str | None = None


def fingerprint(directory: Path) -> Fingerprint:
    """Names, sizes and modification times of every file: a rejected version is retried only
    when this changes."""
    entries = []
    try:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                stat = path.stat()
                entries.append(
                    (path.relative_to(directory).as_posix(), stat.st_size, stat.st_mtime_ns)
                )
    except OSError:
        pass
    return tuple(entries)


class Registry:
    """Holds the served model, the previous one (for instant rollback) and every version's status."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self._rejected: dict[int, tuple[Fingerprint, str]] = {}
        self._held_above: int = 0  # after a rollback, versions up to this are not auto-loaded
        self._lock = threading.Lock()  # one load or swap at a time
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
        if (
            self.settings.model_version is not None
            and self.settings.model_version in self._rejected
        ):
            return (
                f"pinned version {self.settings.model_version} of {name!r} was rejected: "
                + (self._rejected[self.settings.model_version][1])
            )
        if not self.versions():
            return f"no version of model {name!r} found under {directory}"
        return f"no valid version of model {name!r}: " + (self.last_error or "all were rejected")

    def statuses(self) -> list[VersionStatus]:
        """Every version found on disk with its state, highest first."""
        current = self.current.version if self.current else None
        out = []
        for version in sorted(self.versions(), reverse=True):
            if version == current:
                out.append(VersionStatus(version, "serving"))
            elif version in self._rejected:
                out.append(VersionStatus(version, "rejected", self._rejected[version][1]))
            elif current is not None and current < version <= self._held_above:
                out.append(VersionStatus(version, "held", "rolled back from; reload to serve it"))
            else:
                out.append(VersionStatus(version, "available"))
        return out

    # -- loading -----------------------------------------------------------------------------
    def _try_load(self, version: int, force: bool = False) -> LoadedModel | None:
        """Verify and load one version; remember a rejection and its reason."""
        directory = self.settings.model_dir / str(version)
        print_ = fingerprint(directory)
        known = self._rejected.get(version)
        if known and known[0] == print_ and not force:
            return None
        try:
            key = self.settings.artifact_signing_key
            model = load_version(
                directory,
                runtime=self.settings.model_runtime,
                signing_key=key.get_secret_value() if key else None,
                max_batch_rows=self.settings.max_batch_rows,
                batch_wait_ms=self.settings.batch_wait_ms,
            )
        except BundleRejected as exc:
            reason = str(exc)
            self._rejected[version] = (print_, reason)
            self.reloads_rejected += 1
            self.last_error = f"version {version}: {reason}"
            log.warning("rejected version %s of %s: %s", version, self.settings.model_name, reason)
            return None
        if model.name != self.settings.model_name:
            log.info(
                "version %s names model %r; serving it as %r",
                version,
                model.name,
                self.settings.model_name,
            )
        self._rejected.pop(version, None)
        return model

    def _swap(self, model: LoadedModel) -> None:
        old = self.current
        if old is not None and self.previous is not None and self.previous is not model:
            self.previous.close()
        self.previous = old
        self.current = model
        self.reloads_succeeded += 1
        log.info(
            "serving version %s of %s (runtime %s)",
            model.version,
            self.settings.model_name,
            model.runtime.name,
        )

    def load_initial(self) -> None:
        """At start-up: the pinned version, or the highest one that verifies."""
        with self._lock:
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
        """Load the highest newer version that verifies; True when a swap happened."""
        if self.settings.model_version is not None:
            return False
        with self._lock:
            floor = max(self.current.version if self.current else 0, self._held_above)
            for version in sorted((v for v in self.versions() if v > floor), reverse=True):
                model = self._try_load(version)
                if model is not None:
                    self._swap(model)
                    return True
            if self.current is None:  # nothing served yet: a lower version may have become valid
                for version in sorted(self.versions(), reverse=True):
                    model = self._try_load(version)
                    if model is not None:
                        self._swap(model)
                        return True
        return False

    def reload(self, version: int | None = None) -> LoadedModel:
        """Admin reload: the given version, or the highest one that verifies; 409 if rejected."""
        with self._lock:
            available = self.versions()
            if version is not None and version not in available:
                raise NotFound(f"version {version} of model {self.settings.model_name!r} not found")
            candidates = [version] if version is not None else sorted(available, reverse=True)
            if not candidates:
                raise NotFound(self.not_ready_reason())
            reasons = []
            for candidate in candidates:
                if (
                    self.current is not None
                    and candidate == self.current.version
                    and version is None
                ):
                    return self.current
                model = self._try_load(candidate, force=True)
                if model is not None:
                    self._held_above = 0 if version is None else self._held_above
                    self._swap(model)
                    return model
                reasons.append(f"version {candidate}: {self._rejected[candidate][1]}")
            raise Conflict("reload rejected: " + "; ".join(reasons))

    def rollback(self) -> LoadedModel:
        """Swap back to the previously served version, kept in memory; 409 if there is none."""
        with self._lock:
            if self.previous is None or self.current is None:
                raise Conflict("no previous version to roll back to")
            rolled_back_from = self.current.version
            self.current, self.previous = self.previous, self.current
            self._held_above = max(self._held_above, rolled_back_from)
            log.info("rolled back from version %s to %s", rolled_back_from, self.current.version)
            return self.current

    def close(self) -> None:
        for model in (self.current, self.previous):
            if model is not None:
                model.close()

    # -- polling -----------------------------------------------------------------------------
    async def watch(self) -> None:
        """Poll every POLL_SECONDS, loading off the event loop so requests keep flowing."""
        interval = self.settings.poll_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # never let the watcher die; the next poll tries again
                log.exception("polling for new versions failed")
