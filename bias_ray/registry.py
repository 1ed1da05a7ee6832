"""Name -> object registries for engines, mitigations, tasks and metrics.

Adding a plug-in is one file: define the class or function in a module of the registry's *home*
package and decorate it with ``@REGISTRY.register("name")``. The home imports every module of its
own folder (:func:`import_plugins`), so no list of modules is kept by hand. The first lookup imports
the home, so code that only checks names (the spec) needs nothing but this light module and never
imports the plug-in packages itself.

Your own plug-ins live in your own package: name its modules in ``$BIAS_RAY_PLUGINS`` (comma-separated)
or as ``bias_ray.plugins`` entry points, and every registry imports them with its home. A task also
needs its listing entry: a ``tasks.yaml`` beside the plug-in module, in the layout of
``resources/tasks.yaml`` (:func:`bias_ray.catalog.task_listing` merges it).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


PLUGINS_ENV = "BIAS_RAY_PLUGINS"  # your own plug-in modules, comma-separated (e.g. my_lab.mitigations)
ENTRY_POINT_GROUP = "bias_ray.plugins"  # or an installed package's entry points in this group
_external_loaded = False


def external_plugin_modules() -> list[str]:
    """The modules of your own plug-ins: ``$BIAS_RAY_PLUGINS``, then the ``bias_ray.plugins`` entry points."""
    from importlib.metadata import entry_points

    named = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    return list(dict.fromkeys(named + [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]))


def load_external_plugins() -> None:
    """Import your own plug-in modules once, so their ``@REGISTRY.register`` run like the built-in ones'."""
    global _external_loaded
    if _external_loaded:
        return
    _external_loaded = True
    for module in external_plugin_modules():
        try:
            importlib.import_module(module)
        except ImportError as err:
            _external_loaded = False
            raise ImportError(f"plug-in module {module!r} ({PLUGINS_ENV} or a {ENTRY_POINT_GROUP} entry point) "
                              f"cannot be imported: {err}; put its package on PYTHONPATH or install it") from err


class Registry(Generic[T]):
    """Maps names to plug-ins of one kind, with errors that list what is available."""

    def __init__(self, kind: str, home: str | None = None) -> None:
        self.kind = kind
        self.home = home
        self._items: dict[str, T] = {}
        self._home_loaded = home is None

    def _load_home(self) -> None:
        """Import the package that registers the plug-ins (once; a no-op while it is being imported)."""
        if self._home_loaded:
            return
        self._home_loaded = True  # set first: the home's own plug-ins look names up while it imports
        try:
            importlib.import_module(self.home)
            load_external_plugins()
        except BaseException:
            self._home_loaded = False
            raise

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        self._load_home()
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self._load_home()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_home()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_plugins(package: str, skip: tuple[str, ...] = ("base",)) -> list[str]:
    """Import every module of ``package`` (a plug-in home) but ``skip``, so each registers its plug-ins.

    Plug-in modules import their heavy libraries lazily (vLLM, torch), so importing them all is cheap.
    Returns the modules imported, in name order.
    """
    home = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(home.__path__) if m.name not in skip
                   and not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


# The plug-in registries the spec checks names against; each package re-exports its own.
ENGINES: Registry[Any] = Registry("engine", home="bias_ray.generate.engines")
MITIGATIONS: Registry[Any] = Registry("mitigation", home="bias_ray.train.mitigations")
TASKS: Registry[Any] = Registry("task", home="bias_ray.evaluate.tasks")
