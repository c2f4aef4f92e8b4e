"""One model's registry: finds versions, verifies and loads them, swaps atomically, rolls back,
and routes by label (``serving.json``: stable, canary, shadow). :mod:`service.repository` holds
one per served model.

Availability first, as TensorFlow Serving does it: a new version is loaded and verified
before it replaces the served one, and a version that fails is never served.

Two locks: ``_load_lock`` serializes the slow part (verifying and loading a version, seconds
for Keras); ``_swap_lock`` guards the pointer swap, held for microseconds, so a rollback is
instant even while a load is in progress.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import bundle
from service.batching import AdaptiveBatcher
from service.errors import (
    BundleRejected,
    Conflict,
    InvalidInput,
    ModelNotReady,
    NotFound,
    ServiceError,
)
from service.model import LoadedModel, load_version
from service.settings import Settings

log = logging.getLogger("service.registry")

State = Literal["serving", "available", "rejected"]
Fingerprint = tuple[tuple[str, int, int, int, int], ...]

HELD_REASON = "not loaded automatically after a rollback or a pinned reload; POST /admin/reload"
UNVERIFIED_REASON = "not verified yet"
STABLE, CANARY = "stable", "canary"


class Routing:
    """How unversioned requests are answered, replaced whole whenever labels or traffic change:
    the loaded version of each label, the canary share and the shadow. Plain attributes: every
    prediction reads them."""

    __slots__ = ("canary", "canary_percent", "labelled", "shadow", "shadow_percent", "stable")

    def __init__(
        self,
        labelled: dict[str, LoadedModel] | None = None,
        canary_percent: float = 0.0,
        shadow: LoadedModel | None = None,
        shadow_percent: float = 100.0,
    ) -> None:
        self.labelled = labelled or {}
        self.canary_percent = canary_percent
        self.shadow = shadow
        self.shadow_percent = shadow_percent
        self.stable = self.labelled.get(STABLE)
        # The canary answers only with a share to answer.
        self.canary = self.labelled.get(CANARY) if canary_percent > 0 else None


@dataclass
class VersionStatus:
    """What the registry knows of one version directory."""

    version: int
    state: State
    reason: str | None = None
    loaded: bool = False  # answerable by number
    labels: list[str] = field(default_factory=list)


def fingerprint(directory: Path) -> Fingerprint:
    """Name, size, mtime, ctime and inode of every file: a rejected version is retried only
    when this changes (ctime and inode catch a copy that preserves modification times).

    Links are never followed (lstat): a version directory that is a link is one entry, the
    link itself (a link to / is not a walk of the filesystem), and so is a link inside it."""

    def entry(path: Path, stat: os.stat_result) -> tuple[str, int, int, int, int]:
        name = path.relative_to(directory).as_posix() if path != directory else "."
        return (name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)

    try:
        if directory.is_symlink():
            return (entry(directory, directory.lstat()),)
    except OSError:
        return ()
    entries = []
    pending = [directory]
    while pending:
        try:
            with os.scandir(pending.pop()) as iterator:
                found = list(iterator)
        except OSError:
            continue
        for item in found:
            try:
                if item.is_dir(follow_symlinks=False):
                    pending.append(Path(item.path))
                else:  # a file, or a link (never followed)
                    entries.append(entry(Path(item.path), item.stat(follow_symlinks=False)))
            except OSError:
                continue
    return tuple(sorted(entries))


# The sha256 of the manifest.json each loaded model was verified from: with its number, a
# version's identity (a number reused after a delete has other files, another manifest).
_MANIFEST_DIGESTS: weakref.WeakKeyDictionary[LoadedModel, str | None] = weakref.WeakKeyDictionary()
SYMLINK_REASON = (
    "the version directory is a symbolic link: a version must be a directory under "
    "ARTIFACTS_DIR, and links are never followed"
)


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
    """One model's versions: the served one, the previous one (for instant rollback), any other
    loaded ones (MODEL_VERSIONS, labels, the shadow), every version's status and the routing of
    unversioned requests (``serving.json``).

    ``current`` is replaced, never mutated: a request that took it keeps a complete version
    until it answers, whatever swaps happen meanwhile. It is the version polling, reloads and
    rollbacks choose; label ``stable``, when set, answers unversioned requests instead.
    """

    def __init__(
        self, settings: Settings, events: ModelEvents | None = None, name: str | None = None
    ) -> None:
        self.settings = settings
        self.name = name or _only_name(settings)
        self.directory = settings.artifacts_dir / self.name
        self.events = events or ModelEvents()
        self.current: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self.extra: dict[int, LoadedModel] = {}  # other loaded versions, by number
        self.serving = bundle.ServingConfig()  # the last valid serving.json applied
        self.serving_error: str | None = None  # why the file on disk is not applied, if it is not
        self.label_errors: dict[str, str] = {}  # labels naming a version that is not loaded
        self._serving_stat: tuple[int, int, int, int] | None = None
        self.routing = Routing()
        # Where each share's count starts: requests go to the canary (and the shadow) in an
        # even pattern that gives the exact share over any window, from a random phase.
        self._canary_credit = random.uniform(0, 100)
        self._shadow_credit = random.uniform(0, 100)
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
        """Published versions: real directories (never a link), or none when the model
        directory cannot be read (:meth:`not_ready_reason` and :meth:`statuses` say why)."""
        return bundle.list_versions(self.directory)

    def loaded_models(self) -> dict[int, LoadedModel]:
        """Every version answerable by number."""
        loaded = dict(self.extra)
        for model in (self.previous, self.current):
            if model is not None:
                loaded[model.version] = model
        return loaded

    def served(self) -> LoadedModel | None:
        """The version unversioned requests get (the canary aside): label stable, or current."""
        return self.routing.stable or self.current

    def require(self) -> LoadedModel:
        """The served version, or :class:`ModelNotReady` with the reason."""
        model = self.served()
        if model is None:
            raise ModelNotReady(self.not_ready_reason())
        return model

    def route(self) -> LoadedModel:
        """The version for one unversioned request: the canary for CANARY_PERCENT of them."""
        routing = self.routing
        canary = routing.canary
        if canary is not None:
            credit = self._canary_credit + routing.canary_percent
            if credit >= 100:
                self._canary_credit = credit - 100
                return canary
            self._canary_credit = credit
        model = routing.stable or self.current
        if model is None:
            raise ModelNotReady(self.not_ready_reason())
        return model

    def shadow_of(self, model: LoadedModel) -> LoadedModel | None:
        """The shadow version that should also score this request's rows, if any."""
        routing = self.routing
        shadow = routing.shadow
        if shadow is None or shadow is model:
            return None
        if routing.shadow_percent < 100:
            credit = self._shadow_credit + routing.shadow_percent
            if credit < 100:
                self._shadow_credit = credit
                return None
            self._shadow_credit = credit - 100
        return shadow

    def get(self, version: int | None) -> LoadedModel:
        """The served version, or the loaded ``version`` a client asked for."""
        if version is None:
            return self.require()
        model = self.loaded_models().get(version)
        if model is None:
            raise NotFound(f"version {version} of model {self.name!r} is not loaded")
        return model

    def labelled(self, label: str) -> LoadedModel:
        """The version a label names, or :class:`NotFound` saying why there is none."""
        model = self.routing.labelled.get(label)
        if model is not None:
            return model
        version = self.serving.labels.get(label)
        if version is None:
            raise NotFound(f"model {self.name!r} has no label {label[:64]!r}")
        raise NotFound(
            f"label {label!r} of model {self.name!r} is not applied: "
            + self._unloaded_reason(version)
        )

    def not_ready_reason(self) -> str:
        name, directory = self.name, self.directory
        pinned = self.settings.model_version
        rejected = self._rejected.get(pinned) if pinned is not None else None
        if rejected is not None:
            return f"pinned version {pinned} of {name!r} was rejected: {rejected[1]}"
        scan = bundle.versions.scan_versions(directory)
        if scan.error is not None:
            return f"no version of model {name!r} can be listed: {scan.error}"
        if not scan.versions:
            links = "".join(
                f"; {directory / str(v)} is a symbolic link, never served" for v in scan.symlinks
            )
            return f"no version of model {name!r} found under {directory}{links}"
        return f"no valid version of model {name!r}: " + (self.last_error or "all were rejected")

    def statuses(self) -> list[VersionStatus]:
        """Every version found on disk (and any loaded one) with its state, highest first."""
        served = self.served()
        current = self.current
        loaded = self.loaded_models()
        labels: dict[int, list[str]] = {}
        for label, number in sorted(self.serving.labels.items()):
            labels.setdefault(number, []).append(label)
        scan = bundle.versions.scan_versions(self.directory)
        found, links = set(scan.versions), set(scan.symlinks)
        hold = self._hold
        out = []
        for version in sorted(found | set(loaded) | links, reverse=True):
            if version in links and version not in loaded:
                out.append(
                    VersionStatus(
                        version, "rejected", SYMLINK_REASON, False, labels.get(version, [])
                    )
                )
                continue
            if version in found:
                gone = None
            elif scan.error is not None:  # not a deletion: the directory cannot be listed
                gone = f"{scan.error}; kept in memory"
            else:
                gone = "directory removed; kept in memory"
            rejected = self._rejected.get(version)
            if rejected is not None and version in loaded:
                # Its files were replaced on disk (another manifest.json) and the new ones
                # failed: the model loaded before still answers under this number, said here.
                status = VersionStatus(
                    version,
                    "serving" if served is not None and version == served.version else "available",
                    f"replaced on disk; reloading failed: {rejected[1]}; still answering with "
                    "the files loaded before",
                    True,
                    labels.get(version, []),
                )
                out.append(status)
                continue
            status = VersionStatus(
                version, "available", gone, version in loaded, labels.get(version, [])
            )
            if served is not None and version == served.version:
                status.state = "serving"
            elif rejected is not None:
                status.state, status.reason = "rejected", rejected[1]
            elif current is not None and current.version < version <= hold:
                status.reason = HELD_REASON
            elif version not in self._verified:
                status.reason = gone or UNVERIFIED_REASON
            out.append(status)
        return out

    # -- loading -----------------------------------------------------------------------------
    def _try_load(self, version: int, force: bool = False) -> LoadedModel | None:
        """Verify and load one version; remember a rejection, its reason and the files' state."""
        directory = self.directory / str(version)
        # Taken before loading: a file that changes during the load changes it again later.
        print_ = fingerprint(directory)
        known = self._rejected.get(version)
        if known is not None and known[0] == print_ and not force:
            return None
        key = self.settings.artifact_signing_key
        started = time.monotonic()
        digest = bundle.manifest.manifest_digest(directory)
        try:
            if directory.is_symlink():  # never followed, whatever it points to
                raise BundleRejected(SYMLINK_REASON)
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
            log.exception("unexpected failure loading version %s of %s", version, self.name)
            reason = f"cannot be loaded: {type(exc).__name__}"
        else:
            if model.name != self.name:
                log.info(
                    "version %s names model %r; serving it as %r", version, model.name, self.name
                )
                model.name = self.name  # the directory's name is the model's name in every answer
            self._rejected.pop(version, None)
            self._verified[version] = print_
            _MANIFEST_DIGESTS[model] = digest
            log.info(
                "verified version %s of %s in %.2f s",
                version,
                self.name,
                time.monotonic() - started,
            )
            return model
        self._rejected[version] = (print_, reason)
        self._verified.pop(version, None)
        self.reloads_rejected += 1
        self.events.rejected(version, reason)
        self.last_error = f"version {version}: {reason}"
        log.warning(
            "rejected version %s of %s: %s (not retried until its files change)",
            version,
            self.name,
            reason,
        )
        return None

    def _follow_replaced(self) -> None:
        """Under the load lock: a loaded version whose directory now holds another
        ``manifest.json`` (its number reused after a delete, its files rewritten, a link put in
        its place) is verified again. Valid new files replace the model under that number
        wherever it is held (current, previous, extra, labels, shadow); invalid ones leave the
        model loaded before answering, and :meth:`statuses` says "replaced on disk; reloading
        failed" with the reason. A removed directory keeps its model in memory, as before."""
        routing = self.routing
        held = [*routing.labelled.values(), *([routing.shadow] if routing.shadow else [])]
        models = {id(m): m for m in [*self.loaded_models().values(), *held]}
        for old in sorted(models.values(), key=lambda m: m.version):
            if self._closed:
                return
            directory = self.directory / str(old.version)
            if not os.path.lexists(directory):
                continue
            if not directory.is_symlink() and bundle.manifest.manifest_digest(
                directory
            ) == _MANIFEST_DIGESTS.get(old):
                continue
            fresh = self._try_load(old.version)  # a known rejection is not retried
            if fresh is not None:
                self._replace(old, fresh)

    def _replace(self, old: LoadedModel, fresh: LoadedModel) -> None:
        """Put ``fresh`` (the same number, other files) wherever ``old`` is held; retire ``old``."""
        with self._swap_lock:
            before = self.served()
            if self.current is old:
                self.current = fresh
            if self.previous is old:
                self.previous = fresh
            self.extra = {v: fresh if m is old else m for v, m in self.extra.items()}
            routing = self.routing
            if routing.shadow is old or any(m is old for m in routing.labelled.values()):
                self.routing = Routing(
                    {k: fresh if m is old else m for k, m in routing.labelled.items()},
                    routing.canary_percent,
                    fresh if routing.shadow is old else routing.shadow,
                    routing.shadow_percent,
                )
            self.reloads_succeeded += 1
            self.events.loaded(fresh)
            after = self.served()
            if after is not None and after is not before:
                self.events.served(after)
        log.warning(
            "version %s of %s was replaced on disk (another %s): now answering with its new files",
            fresh.version,
            self.name,
            bundle.MANIFEST,
        )
        self._retire([old])

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

    def _in_use(self, model: LoadedModel) -> bool:
        routing = self.routing
        return (
            model is self.current
            or model is self.previous
            or any(model is m for m in self.extra.values())
            or any(model is m for m in routing.labelled.values())
            or model is routing.shadow
        )

    def _retire(self, models: list[LoadedModel], served: bool = True) -> None:
        """Close the models no pointer holds any more."""
        # Safe with requests in flight on them: the batcher finishes queued work first and
        # still answers a request that took this version before the swap.
        with self._swap_lock:
            unused = [m for m in dict.fromkeys(models) if not self._in_use(m)]
        for model in unused:
            model.close()
            if served:
                self.events.unloaded(model)

    def _swap(
        self, model: LoadedModel, *, automatic: bool = False, hold: int | None = None
    ) -> bool:
        """Make ``model`` current; the current one becomes ``previous``. False if it was not
        wanted.

        ``automatic`` (a poll) re-checks under the lock that a rollback or reload made while
        the model loaded did not make it unwanted. ``hold`` sets the polling hold with it.
        """
        with self._swap_lock:
            current = self.current
            floor = max(current.version if current else 0, self._hold)
            if self._closed or (automatic and current is not None and model.version <= floor):
                retired: LoadedModel | None = model
                swapped = False
            else:
                retired = self.previous
                self.previous = current
                self.current = model
                self.reloads_succeeded += 1
                if hold is not None:
                    self._hold = hold
                # Under the lock: another thread's swap or rollback reports after this one.
                self.events.loaded(model)
                if self.routing.stable is None:
                    self.events.served(model)
                swapped = True
        if retired is not None:
            self._retire([retired], served=swapped)
        if swapped:
            stable = self.routing.stable
            if stable is None:
                log.info(
                    "serving version %s of %s (runtime %s)",
                    model.version,
                    self.name,
                    model.runtime.name,
                )
            else:
                log.info(
                    "loaded version %s of %s (runtime %s); label stable keeps unversioned "
                    "requests on version %s",
                    model.version,
                    self.name,
                    model.runtime.name,
                    stable.version,
                )
        return swapped

    def _candidates(self, available: list[int]) -> list[int]:
        """The versions that may become current, highest first: the pinned one, MODEL_VERSIONS'
        list, or every version."""
        if self.settings.model_version is not None:
            return [self.settings.model_version]
        policy = self.settings.version_policy
        if policy.kind == "list":
            return [v for v in policy.versions if v in available]
        return sorted(available, reverse=True)

    def load_initial(self) -> None:
        """At start-up: the pinned version, or the highest one that verifies; then the other
        versions MODEL_VERSIONS and serving.json want."""
        with self._load_lock:
            available = self.versions()
            self._start_floor = max(available, default=0)
            # Labels first: a labelled stable answers from the first request on, never the
            # newest version for the time its load takes.
            self._refresh_serving()
            for version in self._candidates(available):
                if not (self.directory / str(version)).is_dir():
                    self.last_error = f"pinned version {version} not found"
                    continue
                model = self._loaded(version) or self._try_load(version)
                if model is not None:
                    self._swap(model)
                    break
            self._load_wanted()  # latest:N counts the version just served
            if self.served() is None:
                log.warning("not ready: %s", self.not_ready_reason())

    def poll(self) -> bool:
        """Load the highest newer version that verifies; True when a swap happened. Then follow
        serving.json and MODEL_VERSIONS (load what they name, retire what they dropped).

        Then, in the time left of the poll interval, verify versions published since start
        and never checked (broken ones published just before a good one, say) so that /model
        shows them rejected.
        """
        if self._closed:
            return False
        swapped = False
        with self._load_lock:
            started = time.monotonic()
            self._follow_replaced()  # a number reused for other files: load them, or say so
            self._refresh_serving()  # labels before a swap, as at start
            current = self.current
            available = self.versions()
            pinned = self.settings.model_version is not None
            if not pinned or current is None:
                floor = max(current.version if current else 0, self._hold)
                # With nothing served yet, any version may have become valid (files changed).
                for version in self._candidates(available):
                    if current is not None and version <= floor:
                        break
                    if version not in available:
                        continue
                    model = self._loaded(version) or self._try_load(version)
                    if model is not None:
                        swapped = self._swap(model, automatic=True)
                        break
            if swapped:
                self._load_wanted()  # latest:N follows the new version
            self._verify_unchecked(started + max(0.2, self.settings.poll_seconds / 2))
        return swapped

    def _verify_unchecked(self, deadline: float) -> None:
        """Load (then drop) new versions whose current files were never verified, newest first."""
        loaded = set(self.loaded_models())
        for version in sorted(self.versions(), reverse=True):
            if version <= self._start_floor:
                break
            if version in loaded or self._closed:
                continue
            print_ = fingerprint(self.directory / str(version))
            rejected = self._rejected.get(version)
            if self._verified.get(version) == print_ or (rejected and rejected[0] == print_):
                continue
            if time.monotonic() > deadline:
                return
            model = self._try_load(version)
            if model is not None:
                model.close()

    # -- labels and traffic (serving.json) -------------------------------------------------------
    def _refresh_serving(self) -> None:
        """Under the load lock: re-read serving.json when it changed (another replica, a job or
        a person wrote it), then load the versions it and MODEL_VERSIONS want."""
        stat = _stat(bundle.serving.serving_path(self.directory))
        if stat != self._serving_stat:
            try:
                config = bundle.read_serving(self.directory)
            except bundle.BundleError as exc:
                if self.serving_error != str(exc):
                    log.warning(
                        "%s: %s; keeping the labels and traffic applied before", self.name, exc
                    )
                self.serving_error = str(exc)
            else:
                self.serving_error = None
                if config != self.serving:
                    log.info(
                        "%s: labels and traffic from %s: %s", self.name, bundle.SERVING, config
                    )
                self.serving = config
            self._serving_stat = stat
        self._load_wanted()

    def _load_wanted(self) -> None:
        """Under the load lock: load the versions labels, the shadow and MODEL_VERSIONS want,
        retire the extra ones nobody wants any more, and route by the labels."""
        config, policy = self.serving, self.settings.version_policy
        available = self.versions()
        wanted = set(config.labels.values())
        if config.shadow_version is not None:
            wanted.add(config.shadow_version)
        if policy.kind == "all":
            wanted.update(available)
        elif policy.kind == "list":
            wanted.update(policy.versions)
        for version in sorted(wanted, reverse=True):
            self._load_extra(version, available)
        if policy.kind == "latest" and policy.count > 1:
            kept = 0
            for version in sorted(available, reverse=True):
                if kept == policy.count:
                    break
                if self._load_extra(version, available) is not None:
                    wanted.add(version)
                    kept += 1
        wanted |= self._route_by(config)  # a label kept on its last version keeps it loaded
        with self._swap_lock:
            dropped = [m for v, m in self.extra.items() if v not in wanted]
            self.extra = {v: m for v, m in self.extra.items() if v in wanted}
        self._retire(dropped)

    def _load_extra(self, version: int, available: list[int]) -> LoadedModel | None:
        model = self._loaded(version)
        if model is None and version in available and not self._closed:
            model = self._try_load(version)
        if model is not None and version not in self.extra:
            with self._swap_lock:
                self.extra = {**self.extra, version: model}  # replaced: readers copy it unlocked
        return model

    def _route_by(self, config: bundle.ServingConfig) -> set[int]:
        """Route unversioned requests by ``config``'s labels and traffic, with loaded versions;
        return the versions the routing holds.

        A label moved to a version that cannot be loaded here (missing, or rejected on this
        replica) stays on the version it named before, as TF Serving keeps a servable until its
        successor loads: a broken publication never takes traffic from a working one. A label
        with no version to stay on is left out (its route answers 404 with the reason).
        """
        loaded = self.loaded_models()
        old = self.routing
        labelled: dict[str, LoadedModel] = {}
        problems = self.label_problems(config, loaded)
        for label, version in config.labels.items():
            model = loaded.get(version) or old.labelled.get(label)
            if model is not None:
                labelled[label] = model
                if model.version != version:
                    problems[label] += f"; still answering with version {model.version}"
        shadow = loaded.get(config.shadow_version) if config.shadow_version else None
        routing = Routing(labelled, config.canary_percent, shadow, config.shadow_percent)
        if problems != self.label_errors:
            for label, problem in problems.items():
                log.warning("%s: label %r is not applied: %s", self.name, label, problem)
            self.label_errors = problems
        with self._swap_lock:
            before = self.served()
            self.routing = routing
            after = self.served()
            if after is not None and after is not before:
                self.events.served(after)
        held = {m.version for m in labelled.values()}
        return held | ({shadow.version} if shadow is not None else set())

    def label_problems(
        self, config: bundle.ServingConfig, loaded: dict[int, LoadedModel]
    ) -> dict[str, str]:
        """Why each label (and the shadow) naming a version that is not loaded is not applied."""
        named = dict(config.labels)
        if config.shadow_version is not None:
            named["shadow_version"] = config.shadow_version
        problems = {
            label: self._unloaded_reason(version)
            for label, version in sorted(named.items())
            if version not in loaded
        }
        if config.canary_percent > 0 and CANARY not in config.labels:
            problems["canary_percent"] = (
                f"{config.canary_percent:g}% for a canary, but no label {CANARY!r} is set: "
                "every unversioned request goes to the stable version"
            )
        return problems

    def _unloaded_reason(self, version: int) -> str:
        if version not in self.versions():
            return f"version {version} not found"
        return f"version {version} is not loaded: {self._reason(version)}"

    def _available(self, version: int) -> LoadedModel:
        """Under the load lock: a loaded version, or one verified and loaded now; 404 if it is
        not on disk, 409 if it does not verify."""
        model = self._loaded(version)
        if model is not None:
            return model
        if version not in self.versions():
            raise NotFound(f"version {version} of model {self.name!r} not found")
        model = self._try_load(version, force=True)
        if model is None:
            raise Conflict(
                f"version {version} of model {self.name!r} was rejected: {self._reason(version)}"
            )
        with self._swap_lock:
            self.extra = {**self.extra, version: model}
        return model

    def _commit(self, config: bundle.ServingConfig) -> bundle.ServingConfig:
        """Under the load lock: write ``config`` to serving.json, then apply it. When the file
        cannot be written nothing changes (503 naming the reason)."""
        try:
            bundle.write_serving(self.directory, config)
        except OSError as exc:
            self._load_wanted()  # retire what was loaded for it
            raise ServiceError(
                f"cannot write {bundle.SERVING} of model {self.name!r}: {exc.strerror or exc}", 503
            ) from None
        self.serving, self.serving_error = config, None
        # Not the file's stat now: another replica's write may already have replaced ours.
        # The next poll reads the file again and applies whichever is there.
        self._serving_stat = None
        self._load_wanted()
        log.info("%s: labels and traffic set: %s", self.name, config)
        return config

    def set_label(self, label: str, version: int) -> bundle.ServingConfig:
        """Point ``label`` at ``version`` (verified and loaded first) and persist it."""
        with self._load_lock:
            self._refresh_serving()  # build on what another replica may have written
            try:
                model = self._available(version)
                shadow = self.routing.shadow
                if label == STABLE and shadow is not None:
                    _check_shadow_fits(shadow, model)
            except ServiceError:
                self._load_wanted()  # retire what was loaded for nothing
                raise
            labels = {**self.serving.labels, label: model.version}
            return self._commit(self.serving.model_copy(update={"labels": labels}))

    def delete_label(self, label: str) -> bundle.ServingConfig:
        with self._load_lock:
            self._refresh_serving()
            if label not in self.serving.labels:
                raise NotFound(f"model {self.name!r} has no label {label[:64]!r}")
            labels = {k: v for k, v in self.serving.labels.items() if k != label}
            return self._commit(self.serving.model_copy(update={"labels": labels}))

    def set_traffic(self, changes: dict[str, object]) -> bundle.ServingConfig:
        """Change ``canary_percent``, ``shadow_version`` (None: no shadow) and ``shadow_percent``
        (the keys given; the others keep their value) and persist them."""
        with self._load_lock:
            self._refresh_serving()
            try:
                config = bundle.ServingConfig.model_validate(
                    {**self.serving.model_dump(), **changes}
                )
            except ValueError as exc:
                raise InvalidInput(bundle.serving.first_error(exc)) from None
            try:
                if config.shadow_version is not None:
                    shadow = self._available(config.shadow_version)
                    served = self.served()
                    if served is not None:
                        _check_shadow_fits(shadow, served)
                    if served is shadow and self.routing.canary is None:
                        raise Conflict(
                            f"shadow version {shadow.version} is the version that answers "
                            f"unversioned requests of {self.name!r}: it would score nothing"
                        )
            except ServiceError:
                self._load_wanted()
                raise
            return self._commit(config)

    # -- admin ---------------------------------------------------------------------------------
    def reload(self, version: int | None = None) -> LoadedModel:
        """Admin reload: the given version, or the highest one; 404 if absent, 409 if rejected.

        Re-verifies even a version rejected before. Reloading one version holds it: polling
        then loads only versions published later. Without a version, polling resumes.
        """
        with self._load_lock:
            unreadable = bundle.versions.scan_versions(self.directory).error
            if unreadable is not None:  # not an unknown version: the service cannot look
                raise ServiceError(f"model {self.name!r}: {unreadable}", 503)
            self._follow_replaced()  # never answer a reused number with the deleted files
            available = self.versions()
            current = self.current
            if version is not None:
                if version not in available:
                    raise NotFound(f"version {version} of model {self.name!r} not found")
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
        return self.loaded_models().get(version)

    def _reason(self, version: int) -> str:
        rejected = self._rejected.get(version)
        return rejected[1] if rejected else "not verified yet"

    def _still_serving(self) -> str:
        current = self.current
        return f"; still serving version {current.version}" if current else ""

    def rollback(self) -> LoadedModel:
        """Swap back to the previously served version, kept in memory; 409 if there is none.

        Instant: it does not wait for a load in progress. Versions published so far are then
        held (not loaded by polling); a later publication is. A second rollback undoes it.
        With label stable set, unversioned requests follow the label: 409 saying so.
        """
        published = self.versions()
        with self._swap_lock:
            stable = self.routing.stable
            if stable is not None:
                raise Conflict(
                    f"label 'stable' of model {self.name!r} names version {stable.version}, which "
                    f"unversioned requests follow: move it with PUT /admin/models/{self.name}/"
                    "labels/stable instead"
                )
            current, previous = self.current, self.previous
            if previous is None or current is None:
                raise Conflict(f"model {self.name!r} has no previous version to roll back to")
            self.current, self.previous = previous, current
            self._hold = max([self._hold, current.version, *published])
            self.events.served(previous)
        log.info(
            "%s: rolled back from version %s to %s", self.name, current.version, previous.version
        )
        return previous

    def close(self) -> None:
        with self._swap_lock:
            self._closed = True
            models = list(self.loaded_models().values())
            routing = self.routing
            models += [*routing.labelled.values(), *([routing.shadow] if routing.shadow else [])]
        for model in dict.fromkeys(models):
            model.close()
            self.events.unloaded(model)

    # -- polling -----------------------------------------------------------------------------
    async def watch(self) -> None:
        """Poll every POLL_SECONDS, loading off the event loop so requests keep flowing."""
        await poll_every(self.settings.poll_seconds, self.poll, "new versions")


async def poll_every(interval: float, poll: Callable[[], object], what: str) -> None:
    """Call ``poll`` on a worker thread every ``interval`` seconds, forever."""
    next_poll = time.monotonic() + interval
    while True:
        await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
        # A fixed cadence, so a version is found within POLL_SECONDS of its publication;
        # after a poll slower than that (a long load), the next one starts at once.
        next_poll += interval
        try:
            await asyncio.to_thread(poll)
        except Exception:  # never let the watcher die; the next poll tries again
            log.exception("polling for %s failed", what)
        next_poll = max(next_poll, time.monotonic())


def _only_name(settings: Settings) -> str:
    names = settings.served_names
    if names is None or len(names) != 1:
        raise ValueError("a registry needs a model name when MODEL_NAME is not one name")
    return names[0]


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a changed file: ctime and inode catch an edit that keeps size and mtime."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)


def _check_shadow_fits(shadow: LoadedModel, served: LoadedModel) -> None:
    """A shadow scores the rows read for the served version: both must read the same features."""
    if shadow.input_signature != served.input_signature:
        raise Conflict(
            f"shadow version {shadow.version} reads other features than version {served.version} "
            "(names, kinds or categories differ): it cannot score the same rows"
        )
