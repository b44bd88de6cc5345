"""One registry of estimators, looked up along the class MRO."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_estimator", "lookup_estimator", "registered_types"]

_REGISTRY: dict[type, Callable[..., Any]] = {}


def register_estimator(*layer_types: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn(layer, inputs, ctx) -> Estimate`` for the given classes.

    Lookup walks the MRO, so subclasses of a registered class use its estimator unless they
    have their own. Registering a type twice is an error.

    Example:
        >>> @register_estimator(MyScale)
        ... def _scale(layer, inputs, ctx):
        ...     x = inputs[0]
        ...     return Estimate([x.like(x.mean * layer.factor, x.var * layer.factor**2)])
    """
    if not layer_types:
        raise TypeError("register_estimator needs at least one layer class.")
    for t in layer_types:
        if not isinstance(t, type):
            raise TypeError(f"Expected a class to register. Received: {t!r}")
        if t in _REGISTRY:
            raise ValueError(
                f"An estimator for {t.__module__}.{t.__qualname__} is already registered "
                f"({_REGISTRY[t].__name__}). Register a subclass instead."
            )

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for t in layer_types:
            _REGISTRY[t] = fn
        return fn

    return decorate


def lookup_estimator(obj: Any) -> Callable[..., Any] | None:
    for klass in type(obj).__mro__:
        fn = _REGISTRY.get(klass)
        if fn is not None:
            return fn
    return None


def registered_types() -> tuple[type, ...]:
    return tuple(_REGISTRY)
