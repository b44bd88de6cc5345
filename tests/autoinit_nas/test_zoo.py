"""Tests of the reference architectures (build only, no training)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from autoinit_nas.zoo import all_cnn_c, resnet, resnet_blocks


def _count(model: keras.Model, cls: type) -> int:
    return sum(1 for layer in model.layers if type(layer) is cls)


def _main_path_convs(model: keras.Model) -> int:
    return sum(
        1
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and not layer.name.endswith("_proj")
    )


@pytest.mark.parametrize(
    ("depth", "bottleneck", "n"),
    [
        (20, False, 3),
        (32, False, 5),
        (44, False, 7),
        (56, False, 9),
        (110, False, 18),
        (164, True, 18),
        (812, True, 90),
        (1202, False, 200),
        (29, True, 3),
    ],
)
def test_resnet_blocks_rule(depth: int, bottleneck: bool, n: int) -> None:
    assert resnet_blocks(depth) == (bottleneck, n)


@pytest.mark.parametrize(
    ("depth", "batchnorm", "published"),
    # He et al. 2016 (table 6) and He et al. 2016b (table 1): 0.27M, 0.85M, 1.7M, 1.7M.
    [(20, True, 0.27e6), (56, True, 0.85e6), (110, True, 1.7e6), (164, True, 1.7e6)],
)
def test_resnet_parameter_counts_match_published(
    depth: int, batchnorm: bool, published: float
) -> None:
    model = resnet(depth, batchnorm=batchnorm)
    # Projection shortcuts (instead of the paper's zero-padding ones) add about 2-3%.
    assert model.count_params() == pytest.approx(published, rel=0.04)
    # depth = convolutions on the main path + the dense head.
    assert _main_path_convs(model) + _count(model, keras.layers.Dense) == depth
    assert _count(model, keras.layers.BatchNormalization) == _count(model, keras.layers.Conv2D)


def test_resnet56_exact_structure() -> None:
    model = resnet(56)
    assert model.name == "resnet56"
    assert _count(model, keras.layers.BatchNormalization) == 0
    assert _count(model, keras.layers.Add) == 27
    # Two projections: at the start of stages 2 and 3.
    assert [layer.name for layer in model.layers if layer.name.endswith("_proj")] == [
        "stage2_block1_proj",
        "stage3_block1_proj",
    ]
    assert all(layer.use_bias for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert model.get_layer("features").output.shape == (None, 8, 8, 64)
    assert model.get_layer("head").activation is keras.activations.softmax


def test_resnet164_is_bottleneck_with_expansion() -> None:
    model = resnet(164)
    assert model.get_layer("stage1_block1_conv3").filters == 64
    assert model.get_layer("stage1_block1_proj").strides == (1, 1)
    assert model.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert model.get_layer("features").output.shape == (None, 8, 8, 256)
    assert _count(model, keras.layers.Add) == 54


@pytest.mark.parametrize("depth", [0, 7, 21, 100, -4])
def test_resnet_bad_depth_names_it(depth: int) -> None:
    with pytest.raises(ValueError, match=rf"depth={depth}\b"):
        resnet(depth)


def test_resnet_forced_block_type_mismatch() -> None:
    with pytest.raises(ValueError, match="depth=32, bottleneck=True"):
        resnet(32, bottleneck=True)
    with pytest.raises(ValueError, match="depth=29, bottleneck=False"):
        resnet(29, bottleneck=False)
    assert resnet_blocks(164, bottleneck=False) == (False, 27)


def test_resnet_forward_shapes_and_softmax() -> None:
    model = resnet(20, batchnorm=True, input_shape=(16, 16, 1), num_classes=7)
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == (3, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert model.name == "resnet20_bn"


def test_resnet_weighted_add_uses_weighted_add() -> None:
    from autoinit_nas import WeightedAdd

    model = resnet(20, weighted_add=True)
    assert sum(1 for layer in model.layers if isinstance(layer, WeightedAdd)) == 9
    assert _count(model, keras.layers.Add) == 0


def test_all_cnn_c_structure() -> None:
    model = all_cnn_c()
    assert _count(model, keras.layers.Conv2D) == 9
    assert _count(model, keras.layers.Activation) == 10  # 9 activations + softmax head
    assert _count(model, keras.layers.Dropout) == 0
    # Springenberg et al.: about 1.3M parameters.
    assert model.count_params() == 1_369_738
    assert model.get_layer("conv7").output.shape == (None, 6, 6, 192)
    assert model.get_layer("features").output.shape == (None, 6, 6, 10)
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("activation", ["tanh", "selu", "swish", keras.activations.gelu])
def test_all_cnn_c_activation_and_dropout(activation: object) -> None:
    model = all_cnn_c(activation=activation, dropout=0.5, input_shape=(16, 16, 3))
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [(d.name, d.rate) for d in drops] == [("drop1", 0.5), ("drop2", 0.5)]
    act = model.get_layer("act3").activation
    expected = keras.activations.get(activation)
    assert act is expected
    x = np.ones((2, 16, 16, 3), dtype="float32")
    assert keras.ops.convert_to_numpy(model(x)).shape == (2, 10)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_all_cnn_c_bad_dropout(dropout: float) -> None:
    with pytest.raises(ValueError, match="dropout="):
        all_cnn_c(dropout=dropout)


@pytest.mark.slow
def test_resnet812_builds() -> None:
    model = resnet(812)
    assert _main_path_convs(model) + 1 == 812
    assert _count(model, keras.layers.Add) == 270
    assert model.get_layer("features").output.shape == (None, 8, 8, 256)
    # Bottleneck widths as ResNet-164 with 5x the blocks: about 5x its parameters.
    assert 8.0e6 < model.count_params() < 9.0e6
