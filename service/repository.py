"""The model repository: one :class:`~service.registry.Registry` per served model.

``MODEL_NAME`` names the models (one, a list, or ``*``: every model directory under
ARTIFACTS_DIR that holds a version, including ones that appear later, found by polling).
``DEFAULT_MODEL`` (or the only model) answers ``/predict``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import bundle
from service.errors import ModelNotReady, NotFound
from service.registry import ModelEvents, Registry, poll_every
from service.settings import Settings

log = logging.getLogger("service.repository")


class Repository:
    """Every served model's registry, by name; ``models`` is replaced, never mutated."""

    def __init__(
        self, settings: Settings, events: Callable[[str], ModelEvents | None] | None = None
    ) -> None:
        self.settings = settings
        self.listed = settings.served_names  # None: every model directory
        self.models: dict[str, Registry] = {}
        # The model default() names, kept with ``models`` (None when it names none).
        self.default_registry: Registry | None = None
        self._events = events or (lambda name: None)
        self._lock = threading.Lock()  # adding models
        self._closed = False

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.models)

    def get(self, name: str) -> Registry:
        """The registry of ``name``, or :class:`NotFound` listing the models served."""
        registry = self.models.get(name)
        if registry is None:
            raise NotFound(f"model {name[:64]!r} not found; this server serves {self._listing()}")
        return registry

    def default(self) -> Registry:
        """The model unnamed requests (``/predict``) are for: DEFAULT_MODEL, or the only one;
        otherwise the error that says why there is none."""
        registry = self.default_registry
        if registry is not None:
            return registry
        name = self.settings.default_model
        if name is not None:
            return self.get(name)  # not served: 404 listing the models
        if not self.models:
            raise ModelNotReady(self.not_ready_reason())
        raise NotFound(
            f"this server serves several models, {self._listing()}, and DEFAULT_MODEL is not "
            "set: name one in the path, /models/{name}/predict"
        )

    def default_or_none(self) -> Registry | None:
        return self.default_registry

    def ready(self) -> list[Registry]:
        """The served models, each with a served version; :class:`ModelNotReady` with the first
        reason otherwise. DEFAULT_MODEL, when set, must be ready, and so must every model
        MODEL_NAME lists; with ``*``, a model
        directory counts once one of its versions verified (a broken new model does not take
        the others out of service), and at least one must be ready."""
        models = [self.models[name] for name in self.names()]
        default = self.settings.default_model
        if default is not None:  # what /predict answers must be ready
            registry = self.models.get(default)
            if registry is None:
                raise ModelNotReady(f"DEFAULT_MODEL {default!r} is not served (yet)")
            registry.require()
        if self.listed is not None:
            for registry in models:
                registry.require()
            if not models:
                raise ModelNotReady(self.not_ready_reason())
            return models
        ready = [registry for registry in models if registry.served() is not None]
        if not ready:
            raise ModelNotReady(self.not_ready_reason())
        return ready

    def not_ready_reason(self) -> str:
        models = [self.models[name] for name in self.names()]
        for registry in models:
            if registry.served() is None:
                return registry.not_ready_reason()
        if self.listed is None:
            return f"no model directory with a version found under {self.settings.artifacts_dir}"
        return "no model is served"

    def _listing(self) -> str:
        names = self.names()
        shown = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
        return shown or "no model yet"

    # -- loading -----------------------------------------------------------------------------
    def _discover(self) -> list[str]:
        if self.listed is not None:
            return list(self.listed)
        return bundle.list_models(self.settings.artifacts_dir)

    def _add_new(self) -> list[Registry]:
        """Registries for models not seen before (not loaded yet)."""
        added = []
        with self._lock:
            models = dict(self.models)
            for name in self._discover():
                if name not in models and not self._closed:
                    models[name] = Registry(self.settings, self._events(name), name)
                    added.append(models[name])
            self.models = models
            self.default_registry = self._default_of(models)
        return added

    def _default_of(self, models: dict[str, Registry]) -> Registry | None:
        name = self.settings.default_model
        if name is not None:
            return models.get(name)
        return next(iter(models.values())) if len(models) == 1 else None

    def load_initial(self) -> None:
        """At start-up: every model's versions."""
        for registry in self._add_new():
            _isolated(registry.load_initial, registry.name)
        self._warn_without_default()

    def poll(self) -> bool:
        """Models that appeared (with ``*``), then each model's new versions and serving.json.
        One model's failure is logged and leaves the others' polls alone."""
        added = self._add_new()
        for registry in added:
            log.info("found model %r", registry.name)
            _isolated(registry.load_initial, registry.name)
        if added:
            self._warn_without_default()
        swapped = False
        for registry in list(self.models.values()):
            if registry not in added:
                swapped = bool(_isolated(registry.poll, registry.name)) or swapped
        return swapped or bool(added)

    def _warn_without_default(self) -> None:
        if self.settings.default_model is None and len(self.models) > 1:
            log.warning(
                "serving %d models and DEFAULT_MODEL is not set: /predict and /admin/reload "
                "answer 404 until it is; requests name the model in the path",
                len(self.models),
            )
        elif self.settings.default_model is not None and self.settings.default_model not in (
            self.models
        ):
            log.warning("DEFAULT_MODEL %r is not served", self.settings.default_model)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            models = list(self.models.values())
        for registry in models:
            registry.close()

    async def watch(self) -> None:
        """Poll every POLL_SECONDS, loading off the event loop so requests keep flowing."""
        await poll_every(self.settings.poll_seconds, self.poll, "new models and versions")


def _isolated(step: Callable[[], object], name: str) -> object:
    """Run one model's load or poll; an unexpected failure is logged, not raised, so that it
    never stops the other models (the next poll tries again)."""
    try:
        return step()
    except Exception:
        log.exception("loading or polling model %r failed", name)
        return None
