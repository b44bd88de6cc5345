"""Weights that AutoInit creates directly with their planned values.

With the TensorFlow backend, a Keras layer creates each variable inside its own name scope, so
every ``VarHandleOp`` carries a unique name, misses TensorFlow's eager kernel cache and costs
~0.5 ms; the default initializer's draw and AutoInit's later ``assign`` cost more ops. A model
built inside ``deferred_weights()`` has variables with a shape and no backend value yet (Keras'
``StatelessScope(initialize_variables=False)``). ``initialize`` then creates each variable
whose initializer is ``PLANNED`` with its AutoInit value, and every other one with its own
initializer, outside any layer scope. ``search_spaces`` builds every candidate this way.

Only Keras' private variable API is touched here (``_value``, ``_initializer``,
``_initialize``, ``_deferred_initialize``, the ``uninitialized_variables`` list); where it is
missing, ``deferred_weights`` does not defer and models are built as usual.

TensorFlow's eager kernel cache keys ``VarHandleOp`` by its ``shape`` attribute, and every op
taking a resource (``AssignVariableOp``) by the shape the handle carries, so a variable of a
shape not seen since the cache was last emptied costs two kernel builds (~0.75 ms; the cache is
emptied by ``clear_session`` and by every TF seeding, as the evolution worker does per
candidate). ``create`` therefore makes the handle with an unknown shape (both ops then hit the
cache whatever the shape) and gives the variable and its handle's Python-side shape data the
real shape, which is what graphs (``fit``, ``predict``) read, so traced graphs keep every
static shape. Training is bit-identical and equally fast (``benchmarks/variable_creation.py``).
Where no variable creator scope is active, the variable is made from those two ops directly
(``_variable_maker``), without ``tf.Variable``'s scopes and checks: 0.08 ms instead of 0.19 ms.
This uses TensorFlow's private ``ResourceVariable._shape``/``_handle`` and
``resource_variable_ops._set_handle_shapes_and_types``; without them, under a distribution
strategy, or for another backend, variables are created the usual way.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

__all__ = ["PLANNED", "create", "create_pending", "deferred_weights", "is_pending", "pending",
           "put"]

#: Initializer marking a weight AutoInit will plan: created once, with its planned value (zeros
#: where AutoInit plans nothing for it; serialized as ``Zeros``).
PLANNED = keras.initializers.Zeros()

_LIST = "uninitialized_variables"


def _supported() -> bool:
    try:
        from keras.src.backend.common import global_state  # noqa: F401
        from keras.src.backend.common.variables import Variable
    except ImportError:
        return False
    return all(hasattr(Variable, a) for a in ("_initialize", "_deferred_initialize"))


@contextlib.contextmanager
def deferred_weights() -> Iterator[None]:
    """Variables created inside have a shape but no value until ``create`` (or ``initialize``)
    gives them one. Whoever builds a model here must pass it to ``initialize`` (or ``create``
    every ``pending`` variable) before using it."""
    if not _supported():
        yield
        return
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute(_LIST, []) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        # the new variables are ours to create: a later StatelessScope exit must not create them
        global_state.set_global_attribute(_LIST, before)


def is_pending(variable: Any) -> bool:
    """Whether ``variable`` has no backend value yet."""
    return getattr(variable, "_value", True) is None


def pending(model: Any) -> list[Any]:
    """The model's variables that have no backend value yet (none for a non-model)."""
    return [v for v in getattr(model, "variables", ()) if is_pending(v)]


def _constant(variable: Any) -> np.ndarray | None:
    """The value of a constant initializer (zeros, ones, constant) without a backend op."""
    init = variable._initializer
    dtype = keras.backend.standardize_dtype(variable.dtype)
    if type(init) in (keras.initializers.Zeros, keras.initializers.Ones):
        fill = 0.0 if type(init) is keras.initializers.Zeros else 1.0
    elif type(init) is keras.initializers.Constant:  # a value that broadcasts (WeightedAdd's)
        fill = np.asarray(init.value).astype(dtype)
    else:
        return None
    return np.broadcast_to(fill, tuple(variable.shape)).astype(dtype)


@functools.cache
def _variable_maker() -> Callable[..., Any] | None:
    """Makes an eager ``ResourceVariable`` from its handle ops directly: the two ops
    ``tf.Variable`` runs (``VarHandleOp`` with an unknown shape, ``AssignVariableOp``) without
    its name and init scopes and argument checks, 0.08 ms a variable instead of 0.19 ms. None
    where TensorFlow's private API differs."""
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tensorflow.python.eager import context
        from tensorflow.python.framework import constant_op, dtypes, ops, tensor_shape
        from tensorflow.python.ops import (
            gen_resource_variable_ops,
            handle_data_util,
            resource_variable_ops,
        )
        handle_op = gen_resource_variable_ops.var_handle_op
        assign_op = gen_resource_variable_ops.assign_variable_op
        set_handle = resource_variable_ops._set_handle_shapes_and_types
        make_data = handle_data_util.create_handle_data
        kind = resource_variable_ops.ResourceVariable
        base_init = resource_variable_ops.BaseResourceVariable.__init__
        anonymous, uid, graph = context.anonymous_name, ops.uid, ops.get_default_graph
    except (ImportError, AttributeError):
        return None

    def make(value: np.ndarray, name: str, trainable: bool, **sync: Any) -> Any:
        """The variable, or None where ``tf.Variable`` would do more (a variable creator
        scope, a container)."""
        g = graph()
        if getattr(g, "_variable_creator_stack", True) or getattr(g, "_container", True):
            return None
        dtype = dtypes.as_dtype(value.dtype)
        shape = tensor_shape.TensorShape(value.shape)
        handle = handle_op(shape=tensor_shape.TensorShape([None] * value.ndim), dtype=dtype,
                           shared_name=anonymous(), debug_name=name, name=name, container="")
        assign_op(handle, constant_op.constant(value, dtype=dtype))
        set_handle(handle, make_data(shape, dtype), False)
        var = kind.__new__(kind)
        base_init(var, trainable=trainable, shape=shape, dtype=dtype, handle=handle, name=name,
                  unique_id=f"{name}_{uid()}", handle_name=name, in_graph_mode=False, **sync)
        return var

    return make


@functools.cache
def _shape_setter() -> Callable[[Any, tuple[int, ...]], None] | None:
    """Sets a TF variable's static shape (its own and its handle's); None where unavailable."""
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tensorflow.python.ops import handle_data_util, resource_variable_ops
        set_handle = resource_variable_ops._set_handle_shapes_and_types
        make_data = handle_data_util.create_handle_data
        kind = resource_variable_ops.ResourceVariable
    except (ImportError, AttributeError):
        return None
    import tensorflow as tf

    def set_shape(tf_var: Any, shape: tuple[int, ...]) -> None:
        if type(tf_var) is not kind or not hasattr(tf_var, "_shape"):
            raise TypeError(f"not a plain ResourceVariable: {type(tf_var).__name__}")
        full = tf.TensorShape(shape)
        tf_var._shape = full
        set_handle(tf_var._handle, make_data(full, tf_var.dtype), False)

    return set_shape


def _tf_variable(variable: Any, value: np.ndarray) -> Any:
    """A ``tf.Variable`` holding ``value`` whose handle hits the eager kernel cache (see the
    module notes), or ``value`` itself where that cannot be done safely."""
    set_shape = _shape_setter()
    if set_shape is None:
        return value
    import tensorflow as tf

    if tf.distribute.has_strategy() or not tf.executing_eagerly():
        return value
    kwargs = {attr: getattr(variable, mapper)(getattr(variable, attr))
              for attr, mapper in (("aggregation", "_map_aggregation"),
                                   ("synchronization", "_map_synchronization"))
              if hasattr(variable, mapper)}
    make = _variable_maker()
    tf_var = None if make is None else make(value, variable.name, variable.trainable, **kwargs)
    if tf_var is not None:
        return tf_var
    if value.ndim == 0:  # nothing for an unknown shape to save: Keras' own tf.Variable
        return value
    tf_var = tf.Variable(value, dtype=value.dtype, trainable=variable.trainable,
                         name=variable.name, shape=tf.TensorShape([None] * value.ndim), **kwargs)
    try:
        set_shape(tf_var, value.shape)
    except (TypeError, AttributeError):  # a custom variable creator: the usual way instead
        return value
    return tf_var


def create(variable: Any, value: np.ndarray | None = None) -> np.ndarray | None:
    """Give a pending variable its backend value: ``value``, or its own initializer's draw.
    Returns the value where it is known without reading the variable back (given, a constant,
    or drawn here), else None."""
    if value is None:
        value = _constant(variable)
        if value is None and _variable_maker() is not None and callable(variable._initializer):
            # any other initializer (a seeded draw, a seed generator's state): its value,
            # made the fast way (Keras would call it inside tf.Variable)
            value = keras.ops.convert_to_numpy(
                variable._initializer(tuple(variable.shape), dtype=variable.dtype))
        if value is None:
            variable._deferred_initialize()
            return None
    dtype = keras.backend.standardize_dtype(variable.dtype)
    value = np.asarray(value, dtype=dtype)
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(
            f"Expected a value of shape {tuple(variable.shape)} for variable {variable.path}. "
            f"Received shape {tuple(value.shape)}."
        )
    variable._initialize(_tf_variable(variable, value))
    variable._initializer = None
    return value


def create_pending(model: Any, *, but_planned: bool = False) -> dict[str, np.ndarray]:
    """Create the model's pending variables with their own initializers; with ``but_planned``
    those marked ``PLANNED`` keep waiting for their AutoInit values. Returns the values known
    without a read (constant initializers), by variable path."""
    known = {}
    for var in pending(model):
        if not (but_planned and var._initializer is PLANNED):
            value = create(var)
            if value is not None:
                known[var.path] = value
    return known


def put(variable: Any, value: np.ndarray) -> None:
    """Set ``variable`` to ``value``: created with it if pending, else assigned."""
    if is_pending(variable):
        create(variable, value)
    else:
        variable.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype)))
