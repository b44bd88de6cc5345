"""Reference architectures the AutoInit engine is measured on.

Two families from the papers AutoInit is evaluated against:

* :func:`resnet`: the CIFAR ResNets of He et al. ("Deep Residual Learning for Image
  Recognition", 2016, section 4.2; bottleneck depths from "Identity Mappings in Deep Residual
  Networks", 2016), optionally without BatchNormalization, which is the setting of the AutoInit
  paper's Figure 4.
* :func:`all_cnn_c`: All-CNN-C of Springenberg et al. ("Striving for Simplicity: The All
  Convolutional Net", 2015), the network of the AutoInit paper's Figure 2.

Layers get stable, descriptive names (``stage2_block3_conv1``, ``features``, ``pool``, ...) so
that benchmarks and tests can find them in a :class:`~autoinit_nas.SignalReport`.

Example:
    >>> from autoinit_nas.zoo import resnet
    >>> model = resnet(56, batchnorm=True)
    >>> model.count_params() > 800_000
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

__all__ = ["all_cnn_c", "resnet", "resnet_blocks"]

_STAGE_WIDTHS = (16, 32, 64)
_BOTTLENECK_EXPANSION = 4
# Depths up to this one are built from basic blocks when both families fit (e.g. 110 = 6*18+2 =
# 9*12+2 is the basic-block ResNet-110 of He et al.); deeper ones prefer bottleneck blocks
# (164 and 812 are also 6n+2, but the published networks are bottleneck networks).
_MAX_DEFAULT_BASIC_DEPTH = 110


def resnet_blocks(depth: int, bottleneck: bool | None = None) -> tuple[bool, int]:
    """Resolves a CIFAR ResNet depth into its block type and blocks per stage.

    A basic block holds 2 convolutions and a bottleneck block 3; with the stem convolution and
    the dense head, ``depth = 6n + 2`` (basic) or ``depth = 9n + 2`` (bottleneck), where ``n``
    is the number of blocks in each of the three stages. With ``bottleneck=None`` the rule is:
    basic blocks if ``depth <= 110`` and ``depth = 6n + 2``; otherwise bottleneck blocks if
    ``depth = 9n + 2``; otherwise basic blocks if ``depth = 6n + 2`` (e.g. ResNet-1202).

    Args:
        depth: Number of weighted layers on the longest path (convolutions plus the head).
        bottleneck: Force bottleneck (True) or basic (False) blocks; None picks by depth.

    Returns:
        ``(bottleneck, n)``.

    Raises:
        ValueError: If no block type fits ``depth``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"Expected an integer ResNet depth. Received: depth={depth!r}")
    basic_ok = depth >= 8 and (depth - 2) % 6 == 0
    bottleneck_ok = depth >= 11 and (depth - 2) % 9 == 0
    if bottleneck is None:
        if basic_ok and depth <= _MAX_DEFAULT_BASIC_DEPTH:
            bottleneck = False
        elif bottleneck_ok:
            bottleneck = True
        elif basic_ok:
            bottleneck = False
        else:
            raise ValueError(
                "Expected a CIFAR ResNet depth of the form 6n+2 (basic blocks, e.g. 20, 56, 110) "
                f"or 9n+2 (bottleneck blocks, e.g. 164, 812) with n >= 1. Received: depth={depth}"
            )
    elif bottleneck and not bottleneck_ok:
        raise ValueError(
            "Expected a depth of the form 9n+2 (n >= 1) for bottleneck blocks. "
            f"Received: depth={depth}, bottleneck=True"
        )
    elif not bottleneck and not basic_ok:
        raise ValueError(
            "Expected a depth of the form 6n+2 (n >= 1) for basic blocks. "
            f"Received: depth={depth}, bottleneck=False"
        )
    per_block = 3 if bottleneck else 2
    return bool(bottleneck), (depth - 2) // (3 * per_block)


def _conv(
    x: Any,
    filters: int,
    kernel: int,
    strides: int,
    name: str,
    *,
    batchnorm: bool,
    kernel_initializer: Any,
) -> Any:
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        # With BatchNormalization right after, a bias is redundant (BN's beta replaces it).
        use_bias=not batchnorm,
        kernel_initializer=kernel_initializer,
        name=name,
    )(x)
    if batchnorm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return x


def resnet(
    depth: int,
    *,
    batchnorm: bool = False,
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    bottleneck: bool | None = None,
    weighted_add: bool = False,
    kernel_initializer: Any = "glorot_uniform",
    name: str | None = None,
) -> keras.Model:
    """Builds a CIFAR ResNet (He et al., version 1 block ordering).

    Stem: 3x3 conv with 16 filters, [BN], ReLU. Three stages of ``n`` blocks each with widths
    16, 32, 64; the first block of stages 2 and 3 has stride 2 (on its first convolution). A
    basic block is ``conv3x3-[bn]-relu-conv3x3-[bn]``; a bottleneck block is
    ``conv1x1-[bn]-relu-conv3x3-[bn]-relu-conv1x1-[bn]`` with 4x the stage width as output. The
    block output is ``relu(shortcut + residual)``; the shortcut is the identity, or a 1x1
    projection convolution (with [BN]) when the shape changes. Head: global average pooling and
    a softmax Dense layer. Convolutions have a bias only without BatchNormalization.

    Layer names: ``stem_conv``, ``stage{s}_block{b}_conv{i}``, ``..._proj``, ``..._add``,
    ``..._out`` (the block output after ReLU), ``features`` (the last block's output, identical
    to the last ``..._out``: an Identity layer), ``pool`` and ``head``.

    Args:
        depth: Depth ``6n+2`` (basic: 20, 32, 44, 56, 110) or ``9n+2`` (bottleneck: 164, 812);
            see :func:`resnet_blocks` for the rule when both fit.
        batchnorm: Add BatchNormalization after each convolution. False gives the unnormalized
            networks of the AutoInit paper's Figure 4.
        input_shape: Shape of one input sample, channels last.
        num_classes: Width of the softmax head.
        bottleneck: Force the block type; None picks by depth.
        weighted_add: Merge with :class:`autoinit_nas.WeightedAdd` instead of
            ``keras.layers.Add``.
        kernel_initializer: Keras initializer of every convolution kernel (Keras' default
            ``glorot_uniform`` unless given).
        name: Model name; defaults to ``resnet{depth}`` (with ``_bn`` when normalized).

    Returns:
        An uncompiled functional ``keras.Model``.

    Raises:
        ValueError: If the depth fits neither block type (the message names the depth).
    """
    use_bottleneck, n = resnet_blocks(depth, bottleneck)
    if weighted_add:
        from autoinit_nas import WeightedAdd

        merge: Callable[..., Any] = WeightedAdd
    else:
        merge = keras.layers.Add
    conv_opts = {"batchnorm": batchnorm, "kernel_initializer": kernel_initializer}

    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv(inputs, _STAGE_WIDTHS[0], 3, 1, "stem_conv", **conv_opts)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    channels = _STAGE_WIDTHS[0]
    for stage, width in enumerate(_STAGE_WIDTHS, start=1):
        out_channels = width * _BOTTLENECK_EXPANSION if use_bottleneck else width
        for block in range(1, n + 1):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            if use_bottleneck:
                y = _conv(x, width, 1, strides, f"{prefix}_conv1", **conv_opts)
                y = keras.layers.Activation("relu", name=f"{prefix}_relu1")(y)
                y = _conv(y, width, 3, 1, f"{prefix}_conv2", **conv_opts)
                y = keras.layers.Activation("relu", name=f"{prefix}_relu2")(y)
                y = _conv(y, out_channels, 1, 1, f"{prefix}_conv3", **conv_opts)
            else:
                y = _conv(x, width, 3, strides, f"{prefix}_conv1", **conv_opts)
                y = keras.layers.Activation("relu", name=f"{prefix}_relu1")(y)
                y = _conv(y, width, 3, 1, f"{prefix}_conv2", **conv_opts)
            if strides != 1 or channels != out_channels:
                shortcut = _conv(x, out_channels, 1, strides, f"{prefix}_proj", **conv_opts)
            else:
                shortcut = x
            x = merge(name=f"{prefix}_add")([shortcut, y])
            x = keras.layers.Activation("relu", name=f"{prefix}_out")(x)
            channels = out_channels
    x = keras.layers.Identity(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    if name is None:
        name = f"resnet{depth}_bn" if batchnorm else f"resnet{depth}"
    return keras.Model(inputs, outputs, name=name)


def all_cnn_c(
    *,
    activation: str | Callable[..., Any] = "relu",
    dropout: float = 0.0,
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    name: str = "all_cnn_c",
) -> keras.Model:
    """Builds All-CNN-C (Springenberg et al., 2015, table 2 and section 3.2).

    ``conv3x3(96) x2, conv3x3(96, stride 2), [dropout], conv3x3(192) x2,
    conv3x3(192, stride 2), [dropout], conv3x3(192, valid), conv1x1(192),
    conv1x1(num_classes), global average pooling, softmax``. Every convolution is followed by the
    activation as a separate ``Activation`` layer (named ``act1`` ... ``act9``), so the engine and
    the signal report see pre-activation and post-activation moments as two entries; the
    convolutions are ``conv1`` ... ``conv9``, padding "same" except ``conv7``. The paper's input
    dropout (20%) is left out: the dropout rate here applies after the two stride-2 layers, as
    in the AutoInit paper's Figure 2. The last activation is followed by an Identity layer named
    ``features``, then ``pool`` and the softmax ``head``.

    Args:
        activation: A Keras activation name (``"relu"``, ``"tanh"``, ``"selu"``,
            ``"swish"``, ...) or any callable on tensors.
        dropout: Rate of the two Dropout layers (``drop1``, ``drop2``); 0 leaves them out.
        input_shape: Shape of one input sample, channels last.
        num_classes: Number of classes (width of the last convolution).
        name: Model name.

    Returns:
        An uncompiled functional ``keras.Model``.

    Raises:
        ValueError: If ``dropout`` is not in [0, 1).
    """
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"Expected a dropout rate in [0, 1). Received: dropout={dropout!r}")
    # (filters, kernel, strides, padding); None marks where dropout goes.
    plan: list[tuple[int, int, int, str] | None] = [
        (96, 3, 1, "same"),
        (96, 3, 1, "same"),
        (96, 3, 2, "same"),
        None,
        (192, 3, 1, "same"),
        (192, 3, 1, "same"),
        (192, 3, 2, "same"),
        None,
        (192, 3, 1, "valid"),
        (192, 1, 1, "valid"),
        (num_classes, 1, 1, "valid"),
    ]
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    conv_index = drop_index = 0
    for step in plan:
        if step is None:
            drop_index += 1
            if dropout > 0:
                x = keras.layers.Dropout(float(dropout), name=f"drop{drop_index}")(x)
            continue
        filters, kernel, strides, padding = step
        conv_index += 1
        x = keras.layers.Conv2D(
            filters, kernel, strides=strides, padding=padding, name=f"conv{conv_index}"
        )(x)
        x = keras.layers.Activation(activation, name=f"act{conv_index}")(x)
    x = keras.layers.Identity(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Activation("softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=name)
