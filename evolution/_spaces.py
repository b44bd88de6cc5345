"""Finding a search space by name (``network``) or import path (``package.module:Class``)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from autoinit_nas.errors import FatalSearchError
from search_spaces import SearchSpace, TaskSpec

__all__ = ["SPACE_NAMES", "require_space_methods", "resolve_space", "space_spec"]

#: Short names of the search spaces that ship with the project -> class name in search_spaces.
SPACE_NAMES = {"network": "NetworkSearchSpace", "activation": "ActivationSearchSpace"}


def require_space_methods(space: Any, methods: dict[str, str]) -> None:
    """Raise ``TypeError`` naming what ``space`` lacks of ``methods`` (name -> signature)."""
    missing = [m for m in methods if not callable(getattr(space, m, None))]
    if missing:
        raise TypeError(
            f"Expected a search space with {', '.join(methods.values())} (a "
            f"search_spaces.SearchSpace). Received: {type(space).__name__} without "
            f"{', '.join(missing)}"
        )


def space_spec(space: SearchSpace) -> str:
    """The ``module:Class`` import path that ``resolve_space`` turns back into the class."""
    cls = type(space)
    for name, class_name in SPACE_NAMES.items():
        if cls.__module__.startswith("search_spaces") and cls.__name__ == class_name:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


def _task_options(cls: type, options: dict[str, Any], task: TaskSpec | None) -> dict[str, Any]:
    """``input_shape`` and ``num_classes`` of the task, for constructors that take them."""
    if task is None:
        return {}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # builtins or C extensions: nothing to inspect
        return {}
    known = {"input_shape": tuple(task.input_shape), "num_classes": task.num_classes}
    return {k: v for k, v in known.items() if k in params and k not in options}


def resolve_space(
    spec: str, options: dict[str, Any] | None = None, *, task: TaskSpec | None = None
) -> SearchSpace:
    """Instantiate a search space.

    Args:
        spec: a short name (``network``, ``activation``) or ``package.module:ClassName`` of a
            ``SearchSpace`` subclass (importable in every worker process).
        options: keyword arguments of the class's constructor.
        task: the task the space will be built for. A constructor that takes ``input_shape``
            or ``num_classes`` (as ``NetworkSearchSpace`` does) gets the task's, unless
            ``options`` sets them: the space then knows every genome's parameter count and
            never proposes one over its ``max_params``.

    Raises:
        FatalSearchError: the name is unknown, the import fails, or the class is no SearchSpace.
    """
    options = dict(options or {})
    if ":" in spec:
        module_name, _, class_name = spec.partition(":")
    elif spec in SPACE_NAMES:
        module_name, class_name = "search_spaces", SPACE_NAMES[spec]
    else:
        raise FatalSearchError(
            f"Expected a search space among {sorted(SPACE_NAMES)} or 'module:Class'. "
            f"Received: space={spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
        cls = module
        for part in class_name.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as exc:
        raise FatalSearchError(
            f"Could not import search space {spec!r} ({module_name}.{class_name}): {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        raise FatalSearchError(f"Expected a SearchSpace subclass. Received: {spec!r} is {cls!r}")
    options = {**_task_options(cls, options, task), **options}
    try:
        return cls(**options)
    except TypeError as exc:
        raise FatalSearchError(
            f"Could not create search space {spec!r} with options {options}: {exc}"
        ) from exc
