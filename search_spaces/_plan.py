"""Decode a network genome into a layer plan, with shapes and parameter counts, without Keras.

The plan is the list of layers the builder will instantiate, in order, each with its Keras class
name, constructor arguments, input names and output shape. Shape adaptation happens here: conv and
pooling ops on a flattened map see that map again (other flat vectors become 1-channel
sequences), and merges bring their inputs to a common shape (global pooling or reshape to the
lowest rank, average pooling and cropping to the smallest spatial size, and for ``add`` a 1x1
projection to the first input's channels). Because it is pure Python, the plan also gives the
layer and parameter counts cheaply (for NSGA-II).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from autoinit_nas import _expression as expr
from search_spaces.network import INPUT, NetworkGenome, Node

__all__ = ["LayerPlan", "ModelPlan", "plan_network"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerPlan:
    """One layer to build: ``cls`` is a keras.layers name, or ``WeightedAdd`` /
    ``ParametricActivation`` from autoinit_nas; ``seeded`` names initializer arguments."""

    name: str
    cls: str
    kwargs: dict[str, Any]
    inputs: tuple[str, ...]
    shape: Shape
    params: int
    seeded: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelPlan:
    """The whole model: input shape, the layers in build order, and the output layer's name."""

    input_shape: Shape
    layers: tuple[LayerPlan, ...]
    output: str

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_params(self) -> int:
        """Trainable parameters (WeightedAdd coefficients and BatchNorm statistics excluded)."""
        return sum(layer.params for layer in self.layers)


def _spatial(shape: Shape) -> Shape:
    return shape[:-1]


def _suffix(shape: Shape) -> str:
    return f"{len(shape) - 1}D"


class _Planner:
    def __init__(self, input_shape: Shape) -> None:
        self.layers: list[LayerPlan] = []
        self.shapes: dict[str, Shape] = {INPUT: input_shape}
        # flat vectors that lay out a map row-major (a Flatten, the elementwise ops after it, a
        # WeightedAdd with it first): the map's shape, so that a spatial op can see the map again
        self.layouts: dict[str, Shape] = {}

    def add(
        self,
        name: str,
        cls: str,
        src: str | list[str],
        shape: Shape,
        params: int = 0,
        seeded: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> str:
        inputs = (src,) if isinstance(src, str) else tuple(src)
        self.layers.append(LayerPlan(name, cls, kwargs, inputs, shape, params, seeded))
        self.shapes[name] = shape
        return name

    # -- shape adapters ---------------------------------------------------------------------

    def spatial(self, src: str, base: str) -> str:
        """Make ``src`` a sequence or image: a flattened map becomes that map again, other flat
        vectors (Dense units, pooled channels, a vector input) 1-channel sequences."""
        shape = self.shapes[src]
        if len(shape) >= 2:
            return src
        if src in self.layouts:
            new = self.layouts[src]
            return self.add(f"{base}_as_map", "Reshape", src, new, target_shape=new)
        return self.add(f"{base}_as_seq", "Reshape", src, (shape[0], 1), target_shape=(shape[0], 1))

    def to_rank(self, src: str, rank: int, base: str) -> str:
        shape = self.shapes[src]
        if len(shape) == rank:
            return src
        if rank == 1:
            return self.add(
                f"{base}_gap", f"GlobalAveragePooling{_suffix(shape)}", src, (shape[-1],)
            )
        # image -> sequence: rows of pixels one after another.
        new = (math.prod(shape[:-1]), shape[-1])
        return self.add(f"{base}_as_seq", "Reshape", src, new, target_shape=new)

    def to_spatial(self, src: str, target: Shape, base: str) -> str:
        shape = self.shapes[src]
        if _spatial(shape) == target:
            return src
        factors = tuple(max(1, s // t) for s, t in zip(_spatial(shape), target, strict=True))
        if any(f > 1 for f in factors):
            pooled = tuple(s // f for s, f in zip(_spatial(shape), factors, strict=True))
            src = self.add(
                f"{base}_pool",
                f"AveragePooling{_suffix(shape)}",
                src,
                (*pooled, shape[-1]),
                pool_size=factors,
                strides=factors,
                padding="valid",
            )
            shape = self.shapes[src]
        extra = [s - t for s, t in zip(_spatial(shape), target, strict=True)]
        if any(extra):
            crop = tuple((e // 2, e - e // 2) for e in extra)
            src = self.add(
                f"{base}_crop",
                f"Cropping{_suffix(shape)}",
                src,
                (*target, shape[-1]),
                cropping=crop[0] if len(crop) == 1 else crop,
            )
        return src

    def project(self, src: str, channels: int, base: str) -> str:
        shape = self.shapes[src]
        if shape[-1] == channels:
            return src
        if len(shape) == 1:
            return self.add(
                f"{base}_proj",
                "Dense",
                src,
                (channels,),
                shape[0] * channels + channels,
                seeded=("kernel_initializer",),
                units=channels,
            )
        return self.add(
            f"{base}_proj",
            f"Conv{_suffix(shape)}",
            src,
            (*shape[:-1], channels),
            shape[-1] * channels + channels,
            seeded=("kernel_initializer",),
            filters=channels,
            kernel_size=1,
        )

    # -- nodes ------------------------------------------------------------------------------

    def merge(self, node: Node, name: str) -> str:
        srcs = list(node.inputs)
        rank = min(len(self.shapes[s]) for s in srcs)
        srcs = [self.to_rank(s, rank, f"{node.id}_in{k}") for k, s in enumerate(srcs)]
        if rank > 1:
            target = tuple(
                min(d) for d in zip(*(_spatial(self.shapes[s]) for s in srcs), strict=True)
            )
            srcs = [self.to_spatial(s, target, f"{node.id}_in{k}") for k, s in enumerate(srcs)]
        shapes = [self.shapes[s] for s in srcs]
        if node.op == "add":
            channels = shapes[0][-1]
            srcs = [self.project(s, channels, f"{node.id}_in{k}") for k, s in enumerate(srcs)]
            if srcs[0] in self.layouts:  # a sum per element, in the first input's order
                self.layouts[name] = self.layouts[srcs[0]]
            return self.add(name, "WeightedAdd", srcs, shapes[0])
        out = (*shapes[0][:-1], sum(s[-1] for s in shapes))
        return self.add(name, "Concatenate", srcs, out, axis=-1)

    def layer(self, node: Node, name: str) -> str:
        out = self._layer(node, name)
        src = node.inputs[0]
        shape = self.shapes[src]
        if node.op == "flatten" and len(shape) > 1:
            self.layouts[out] = shape
        elif node.op != "dense" and src in self.layouts and self.shapes[out] == shape:
            # an op that keeps the flat shape acts per element (or, for a normalization, over
            # all of them): the values stay where the map put them
            self.layouts[out] = self.layouts[src]
        return out

    def _layer(self, node: Node, name: str) -> str:
        src = node.inputs[0]
        op, p = node.op, node.p
        shape = self.shapes[src]
        if op == "dense":
            u = p["units"]
            return self.add(
                name,
                "Dense",
                src,
                (*shape[:-1], u),
                shape[-1] * u + u,
                seeded=("kernel_initializer",),
                units=u,
            )
        if op in ("conv", "separable_conv", "depthwise_conv", "max_pool", "avg_pool"):
            src = self.spatial(src, node.id)
            shape = self.shapes[src]
            d = len(shape) - 1
            size = p["pool_size"] if "pool" in op else p["kernel_size"]
            out_sp = tuple(math.ceil(s / p["strides"]) for s in _spatial(shape))
            c, k = shape[-1], size**d
            common = {"strides": p["strides"], "padding": "same"}
            if op == "conv":
                f = p["filters"]
                return self.add(
                    name,
                    f"Conv{d}D",
                    src,
                    (*out_sp, f),
                    k * c * f + f,
                    seeded=("kernel_initializer",),
                    filters=f,
                    kernel_size=size,
                    **common,
                )
            if op == "separable_conv":
                f = p["filters"]
                return self.add(
                    name,
                    f"SeparableConv{d}D",
                    src,
                    (*out_sp, f),
                    k * c + c * f + f,
                    seeded=("depthwise_initializer", "pointwise_initializer"),
                    filters=f,
                    kernel_size=size,
                    **common,
                )
            if op == "depthwise_conv":
                m = p["depth_multiplier"]
                return self.add(
                    name,
                    f"DepthwiseConv{d}D",
                    src,
                    (*out_sp, c * m),
                    k * c * m + c * m,
                    seeded=("depthwise_initializer",),
                    kernel_size=size,
                    depth_multiplier=m,
                    **common,
                )
            cls = "MaxPooling" if op == "max_pool" else "AveragePooling"
            return self.add(name, f"{cls}{d}D", src, (*out_sp, c), pool_size=size, **common)
        if op == "batch_norm":
            return self.add(name, "BatchNormalization", src, shape, 2 * shape[-1])
        if op == "layer_norm":
            if shape[-1] == 1 and len(shape) > 1:
                # Normalizing one channel per position would output beta alone (every value
                # minus itself); a single-channel map is normalized over all its positions.
                axes = list(range(1, len(shape) + 1))
                return self.add(
                    name, "LayerNormalization", src, shape, 2 * math.prod(shape), axis=axes
                )
            return self.add(name, "LayerNormalization", src, shape, 2 * shape[-1])
        if op == "dropout":
            return self.add(name, "Dropout", src, shape, seeded=("seed",), rate=p["rate"])
        if op == "activation":
            if "function" in p:
                return self.add(name, "Activation", src, shape, activation=p["function"])
            tree = expr.parse(p["expression"])
            return self.add(
                name,
                "ParametricActivation",
                src,
                shape,
                len(expr.parameters_of(tree)),
                expression=p["expression"],
            )
        if op == "identity":
            return self.add(name, "Identity", src, shape)
        if op == "flatten":
            return self.add(name, "Flatten", src, (math.prod(shape),))
        raise AssertionError(f"op {op!r} has no plan")  # unreachable: genomes are validated


def plan_network(genome: NetworkGenome, input_shape: Shape, num_classes: int) -> ModelPlan:
    """The layers that ``genome`` decodes to for inputs of ``input_shape`` (batch axis excluded).

    Layer names are ``<node id>_<op>`` for genome nodes, ``<node id>_in<k>_<adapter>`` for shape
    adapters, then ``head_input`` (the vector entering the classifier), ``logits`` (Dense, no
    activation) and ``probs`` (softmax).

    Raises:
        ValueError: if ``input_shape`` is not a vector, sequence or image shape.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if not 1 <= len(input_shape) <= 3 or min(input_shape) < 1:
        raise ValueError(
            "Expected an input shape of rank 1 (vector), 2 (sequence, channels last) or 3 "
            f"(image, channels last) with positive sizes. Received: input_shape={input_shape}"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"Expected num_classes >= 2. Received: num_classes={num_classes!r}")
    planner = _Planner(input_shape)
    names = {INPUT: INPUT}
    for node in genome.nodes:
        name = f"{node.id}_{node.op}"
        # Inputs are referred to by the name of the layer that produced them.
        node = node.replace(inputs=[names[i] for i in node.inputs])
        names[node.id] = planner.merge(node, name) if node.is_merge else planner.layer(node, name)
    last = names[genome.output]
    shape = planner.shapes[last]
    if len(shape) == 1:
        head = planner.add("head_input", "Identity", last, shape)
    elif genome.head == "flatten":
        head = planner.add("head_input", "Flatten", last, (math.prod(shape),))
    else:
        pool = "GlobalAveragePooling" if genome.head == "global_avg" else "GlobalMaxPooling"
        head = planner.add("head_input", f"{pool}{_suffix(shape)}", last, (shape[-1],))
    width = planner.shapes[head][0]
    planner.add(
        "logits",
        "Dense",
        head,
        (num_classes,),
        width * num_classes + num_classes,
        seeded=("kernel_initializer",),
        units=num_classes,
    )
    planner.add("probs", "Activation", "logits", (num_classes,), activation="softmax")
    return ModelPlan(input_shape, tuple(planner.layers), "probs")
