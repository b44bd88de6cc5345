"""Build a network genome into a compiled Keras model, initialized by AutoInit."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from autoinit_nas.errors import InvalidGenomeError
from search_spaces._plan import ModelPlan, plan_network
from search_spaces.base import TaskSpec
from search_spaces.network import NetworkGenome

__all__ = ["build_network", "genome_size"]

logger = logging.getLogger(__name__)

INITS = ("autoinit", "default")


def _layer_class(name: str) -> type:
    if name == "WeightedAdd":
        from autoinit_nas import WeightedAdd

        return WeightedAdd
    if name == "ParametricActivation":
        from autoinit_nas import ParametricActivation

        return ParametricActivation
    return getattr(keras.layers, name)


def instantiate(
    plan: ModelPlan, seed: int | None = None, name: str | None = None, *, draw: bool = True
) -> keras.Model:
    """An uncompiled functional model from a plan, with Keras' default initializers.

    With a ``seed`` every initializer and dropout layer gets its own seed derived from it, so the
    default initialization is reproducible too. With ``draw=False`` the model is built for
    AutoInit: its variables are not created yet (``autoinit_nas._deferred``), and it must go to
    ``autoinit_nas.initialize``, which creates its kernels with their planned values.
    """
    seeds = (
        iter(np.random.SeedSequence(seed).generate_state(len(plan.layers) * 2, dtype=np.uint32))
        if seed is not None
        else None
    )
    if draw:
        return _functional(plan, seeds, name, draw)
    from autoinit_nas._deferred import deferred_weights

    with deferred_weights():
        return _functional(plan, seeds, name, draw)


def _functional(plan: ModelPlan, seeds: Any, name: str | None, draw: bool) -> keras.Model:
    from autoinit_nas._deferred import PLANNED

    inputs = keras.Input(shape=plan.input_shape, name="input")
    tensors: dict[str, Any] = {"input": inputs}
    for lp in plan.layers:
        kwargs = dict(lp.kwargs)
        for arg in lp.seeded:
            s = None if seeds is None else int(next(seeds)) & 0x7FFFFFFF
            if arg == "seed":
                kwargs[arg] = s
            elif draw:
                kwargs[arg] = keras.initializers.GlorotUniform(seed=s)
            else:  # AutoInit plans the bias with the kernel
                kwargs[arg] = kwargs["bias_initializer"] = PLANNED
        layer = _layer_class(lp.cls)(name=lp.name, **kwargs)
        args = [tensors[i] for i in lp.inputs]
        tensors[lp.name] = layer(
            args if len(args) > 1 or lp.cls in ("WeightedAdd", "Concatenate") else args[0]
        )
    return keras.Model(inputs, tensors[plan.output], name=name)


def build_network(
    genome: NetworkGenome,
    task: TaskSpec,
    *,
    init: str = "autoinit",
    seed: int | None = None,
    compile: bool = True,
    max_params: int | None = None,
    **autoinit_options: Any,
) -> keras.Model:
    """Decode ``genome`` for ``task``, initialize and compile it.

    Args:
        genome: the architecture.
        task: input shape, number of classes and learning rate.
        init: ``"autoinit"`` (``autoinit_nas.initialize``, report attached as
            ``model.signal_report``) or ``"default"`` (Keras' initializers, seeded by ``seed``).
        seed: seed of the initialization (and of dropout).
        compile: compile with Adam(task.learning_rate), sparse categorical crossentropy and
            accuracy (default True).
        max_params: reject (``InvalidGenomeError``) a genome whose model would have more
            trainable parameters, before any Keras work (None: no limit).
        **autoinit_options: passed to ``autoinit_nas.initialize``.

    Raises:
        InvalidGenomeError: when the model would exceed ``max_params``, or when AutoInit
            finds no signal to scale (a ``SignalError``, e.g. a
            layer whose output is constant); the message gives the engine's reason.

    Returns:
        The model; its output is the class probabilities (layer ``probs``), its pre-softmax
        scores are the output of layer ``logits`` and the vector entering the classifier the
        output of ``head_input``.
    """
    if init not in INITS:
        raise ValueError(f"Expected init to be one of {list(INITS)}. Received: init={init!r}")
    if init == "default" and autoinit_options:
        raise ValueError(
            "AutoInit options only apply with init='autoinit'. "
            f"Received: init='default' with {sorted(autoinit_options)}"
        )
    plan = plan_network(genome, task.input_shape, task.num_classes)
    if max_params is not None and plan.num_params > max_params:
        raise InvalidGenomeError(
            f"Genome {genome.hash()} is too large for input shape {tuple(task.input_shape)}: "
            f"{plan.num_params:,} trainable parameters, more than max_params={max_params:,}."
        )
    model = instantiate(plan, seed=seed, name=f"genome_{genome.hash()}", draw=init == "default")
    if init == "autoinit":
        from autoinit_nas import initialize
        from autoinit_nas.errors import SignalError

        try:
            model.signal_report = initialize(model, seed=seed, **autoinit_options)
        except SignalError as err:
            # E.g. an evolved activation that is constant on the range its input takes: the
            # genome decodes, but no weight scale can carry a signal through it.
            raise InvalidGenomeError(
                f"Genome {genome.hash()} decodes, but its signal cannot be initialized: {err}"
            ) from err
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=task.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model


def genome_size(genome: NetworkGenome, task: TaskSpec) -> tuple[int, int]:
    """``(layers, trainable parameters)`` of the decoded model, computed without Keras.

    Layers count every built layer (shape adapters and the head included, the input excluded);
    parameters exclude BatchNormalization statistics and WeightedAdd coefficients.
    """
    plan = plan_network(genome, task.input_shape, task.num_classes)
    return plan.num_layers, plan.num_params
