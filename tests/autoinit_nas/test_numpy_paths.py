"""NumPy shortcuts of the engine agree with the Keras calls they replace."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from autoinit_nas import _functions as F
from autoinit_nas._rules import run_on_maps
from autoinit_nas._signal import Signal

L = keras.layers


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (L.Flatten(), (6, 4)),
        (L.Flatten(), (3, 5, 2)),
        (L.Reshape((24,)), (6, 4)),
        (L.Reshape((8, 3)), (6, 4)),
        (L.Reshape((12, 1)), (12,)),
    ],
)
def test_numpy_reshapes_move_maps_as_the_keras_layer_does(layer: L.Layer, shape: tuple) -> None:
    rng = np.random.default_rng(0)
    x = Signal(rng.normal(size=shape), rng.uniform(0.5, 2.0, size=shape), shape)
    out_shape = tuple(int(d) for d in layer.compute_output_shape((None, *shape))[1:])
    by_keras = run_on_maps(layer.call, x, out_shape)
    by_numpy = run_on_maps(lambda m: np.reshape(m, out_shape), x, out_shape, numpy=True)
    assert by_numpy.shape == by_keras.shape == out_shape
    np.testing.assert_allclose(by_numpy.mean, by_keras.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(by_numpy.var, by_keras.var, rtol=1e-6, atol=1e-7)


def test_numpy_softmax_matches_the_keras_softmax_on_the_same_draws() -> None:
    rng = np.random.default_rng(1)
    x = Signal(rng.normal(0.0, 0.5, 10), rng.uniform(0.5, 2.0, 10), (10,))
    fast = F.apply_function(keras.activations.softmax, x, seed=123)  # draws: seed 0, kept
    slow = F.monte_carlo(lambda t: keras.activations.softmax(t, axis=-1), x, seed=0)
    np.testing.assert_allclose(fast.mean, slow.mean / np.sum(slow.mean), rtol=1e-9)
    np.testing.assert_allclose(fast.var, slow.var, rtol=1e-9)
    assert np.sum(fast.mean) == pytest.approx(1.0)
    # the same block serves the next call: identical moments, and the block is read-only
    again = F.apply_function(keras.activations.softmax, x, seed=7)
    np.testing.assert_array_equal(again.var, fast.var)
    with pytest.raises(ValueError):
        F._normal_block(0, 4096, 1, 10)[0, 0, 0] = 1.0
