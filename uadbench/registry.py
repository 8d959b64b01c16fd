"""Name -> object registries with decorator registration and lazy entry-point discovery.

Every method, dataset, shift and metric is found by name through a :class:`Registry`. An object is
registered by decorating it (``@register_method("ae")``); the module that holds it is imported
lazily through an entry point of the registry's group (``uadbench.methods``, ...). First-party
plugins are declared through the same entry points as third-party ones, so the harness never
imports a method or dataset module by name.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from uadbench.errors import UadbenchError

T = TypeVar("T")


class RegistryError(UadbenchError):
    """A registry lookup or registration failed."""


def _one_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return line.rstrip(".")


class Registry(Generic[T]):
    """A registry of named objects of one kind.

    ``kind`` is the human name used in messages ("method"); ``group`` is the entry-point group
    scanned for plugin modules ("uadbench.methods").
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._loaded_eps: set[str] = set()
        self._errors: dict[str, str] = {}  # entry-point name -> why its module failed to load
        self._refused: dict[str, str] = {}  # name -> why it was not registered (a dataset card that cannot be read)
        self._all_loaded = False
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, description: str | None = None):
        """Register ``obj`` under ``name``; used bare or as a decorator."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(target: T) -> T:
            with self._lock:
                existing = self._items.get(name)
                if existing is not None and not _same_object(existing, target):
                    raise RegistryError(
                        f"{self.kind} {name!r} is already registered by "
                        f"{_qualname(existing)}; choose another name for {_qualname(target)}"
                    )
                self._items[name] = target
                self._refused.pop(name, None)
                self._descriptions[name] = description or _one_line(target)
                try:
                    cast(Any, target).registered_name = name  # any object may be registered
                except (AttributeError, TypeError):
                    pass
            return target

        if obj is not None:
            return decorator(obj)
        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and interactive use)."""
        with self._lock:
            self._items.pop(name, None)
            self._descriptions.pop(name, None)
            self._refused.pop(name, None)

    def refuse(self, name: str, reason: str) -> None:
        """Remember that ``name`` was not registered and why (one line): looking it up raises
        ``reason`` instead of "unknown" (unless another object holds the name), and :meth:`refusals` lists it."""
        with self._lock:
            self._refused[name] = " ".join(str(reason).split())

    def refusals(self, pattern: str = "*") -> dict[str, str]:
        """name -> why, for every refused name matching ``pattern`` (after loading the plugins)."""
        self.load_all()
        return {n: self._refused[n] for n in sorted(self._refused) if fnmatch.fnmatchcase(n, pattern)}

    # -- discovery ----------------------------------------------------------------------------
    def _entry_points(self) -> list[importlib.metadata.EntryPoint]:
        return list(importlib.metadata.entry_points(group=self.group))

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        """Import one plugin module; a failure is remembered (one line), never raised here."""
        key = f"{ep.name}={ep.value}"
        if key in self._loaded_eps:
            return
        self._loaded_eps.add(key)
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not hide the others
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self._errors[ep.name] = (
                f"could not load {self.kind} plugin {ep.name!r} ({ep.value}) from entry-point "
                f"group {self.group!r}: {type(exc).__name__}: {first}"
            )

    def load_all(self) -> None:
        """Import every module declared in the entry-point group (broken ones are skipped)."""
        with self._lock:
            if self._all_loaded:
                return
            for ep in self._entry_points():
                self._load_entry_point(ep)
            self._all_loaded = True

    def runtime_modules(self) -> list[str]:
        """Importable modules that registered items here without an entry point (a user's script
        module or a test module): worker processes import them to know those items too."""
        ep_modules = {ep.value.split(":")[0] for ep in self._entry_points()}
        out = set()
        for obj in self._items.values():
            module = getattr(obj, "__module__", None)
            if not module or module == "__main__" or module in ep_modules or module.startswith("uadbench."):
                continue
            if getattr(sys.modules.get(module), "__spec__", None) is not None:
                out.add(module)
        return sorted(out)

    def load_errors(self) -> list[str]:
        """One line per plugin module that failed to import (after :meth:`names` or :meth:`get`)."""
        return [self._errors[k] for k in sorted(self._errors)]

    def refresh(self) -> None:
        """Forget which entry points were scanned (after installing a plugin at run time)."""
        with self._lock:
            self._all_loaded = False
            self._loaded_eps.clear()
            self._errors.clear()
            importlib.invalidate_caches()

    # -- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        with self._lock:
            if name in self._items:
                return self._items[name]
            for ep in self._entry_points():
                if ep.name == name:
                    self._load_entry_point(ep)
            if name in self._items:
                return self._items[name]
            self.load_all()
            if name in self._items:
                return self._items[name]
            if name in self._refused:
                raise RegistryError(self._refused[name])
            if name in self._errors:
                raise RegistryError(self._errors[name])
        raise RegistryError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        available = sorted(self._items)
        close = difflib.get_close_matches(str(name), available, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        refused = f"; refused: {', '.join(sorted(self._refused))} (`uadbench list {self.kind}s` says why)" if self._refused else ""
        return (
            f"unknown {self.kind} {name!r}; {hint}available: {', '.join(available) or '(none)'}{refused}"
        )

    def names(self, pattern: str = "*") -> list[str]:
        self.load_all()
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def describe(self, name: str) -> str:
        self.get(name)
        return self._descriptions.get(name, "")

    def __contains__(self, name: object) -> bool:
        try:
            self.get(name)  # type: ignore[arg-type]
        except RegistryError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _qualname(obj: object) -> str:
    mod = getattr(obj, "__module__", "?")
    return f"{mod}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _same_object(a: object, b: object) -> bool:
    # A module imported twice under the same name (importlib reload) re-registers an equal class.
    if a is b:
        return True
    named = (type, type(_qualname))
    return isinstance(a, named) and isinstance(b, named) and _qualname(a) == _qualname(b)


METHODS: Registry = Registry("method", "uadbench.methods")
DATASETS: Registry = Registry("dataset", "uadbench.datasets")
SHIFTS: Registry = Registry("shift", "uadbench.shifts")
METRICS: Registry = Registry("metric", "uadbench.metrics")
EXECUTORS: Registry = Registry("executor", "uadbench.executors")

REGISTRIES: dict[str, Registry] = {
    "methods": METHODS,
    "datasets": DATASETS,
    "shifts": SHIFTS,
    "metrics": METRICS,
    "executors": EXECUTORS,
}


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`uadbench.Method` subclass under ``name``."""
    return METHODS.register(name)


def register_dataset(name: str) -> Callable[[T], T]:
    """Register a dataset class under ``name``."""
    return DATASETS.register(name)


def register_shift(name: str) -> Callable[[T], T]:
    """Register an intensity shift function under ``name``."""
    return SHIFTS.register(name)


def register_metric(name: str, description: str | None = None) -> Callable[[T], T]:
    """Register a metric under ``name``."""
    return METRICS.register(name, description=description)


def runtime_modules() -> list[str]:
    """Modules that registered methods, datasets, shifts or metrics outside the entry points."""
    return sorted({m for registry in REGISTRIES.values() for m in registry.runtime_modules()})


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def list_shifts(pattern: str = "*") -> list[str]:
    return SHIFTS.names(pattern)


def list_metrics(pattern: str = "*") -> list[str]:
    return METRICS.names(pattern)
