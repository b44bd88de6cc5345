"""Network search space: determinism, mutation chains, crossover, and building through AutoInit."""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest

from search_spaces import (
    INPUT,
    MUTATIONS,
    InvalidGenomeError,
    NetworkGenome,
    NetworkSearchSpace,
    Node,
    TaskSpec,
    genome_from_json,
    genome_size,
    mnist1d_cnn_genome,
    mnist1d_mlp_genome,
)

TASKS = [TaskSpec((40, 1), 10), TaskSpec((12, 12, 3), 5), TaskSpec((30,), 4)]


def _chain(space: NetworkSearchSpace, rng: np.random.Generator, length: int) -> NetworkGenome:
    genome = space.sample(rng) if rng.random() < 0.5 else mnist1d_cnn_genome()
    for _ in range(length):
        genome = space.mutate(genome, rng)
    return genome


def test_same_seed_gives_the_same_genomes() -> None:
    space = NetworkSearchSpace(expression_rate=0.3)
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(123)
        runs.append([_chain(space, rng, 5).hash() for _ in range(20)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 20
    other = np.random.default_rng(124)
    assert [_chain(space, other, 5).hash() for _ in range(20)] != runs[0]


def test_mutation_chains_always_decode_for_every_task_kind() -> None:
    space = NetworkSearchSpace(max_nodes=20, expression_rate=0.3)
    rng = np.random.default_rng(0)
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(300):
        genome = mnist1d_cnn_genome() if rng.random() < 0.3 else space.sample(rng)
        for _ in range(int(rng.integers(1, 12))):
            child, name = space.mutate_named(genome, rng)
            seen[name] += 1
            assert child != genome
            space.validate(child)
            assert genome_from_json(child.to_json()) == child
            genome = child
        for task in TASKS:
            layers, params = genome_size(genome, task)
            assert layers >= 3 and params > 0
    assert set(seen) == set(MUTATIONS)


def test_mutation_leaves_the_parent_unchanged_and_respects_max_nodes() -> None:
    space = NetworkSearchSpace(max_nodes=8, sample_nodes=(8, 8))
    rng = np.random.default_rng(1)
    parent = space.sample(rng)
    for _ in range(200):
        text = parent.to_json()
        child = space.mutate(parent, rng)
        assert len(child) <= 8
        assert parent.to_json() == text
        parent = child


def test_skip_edges_add_merges_and_can_be_removed() -> None:
    space = NetworkSearchSpace()
    rng = np.random.default_rng(2)
    genome = mnist1d_cnn_genome()
    while not any(n.is_merge for n in genome.nodes):
        genome = space.mutate(genome, rng)
    merges = sum(n.is_merge for n in genome.nodes)
    removed = False
    for _ in range(200):
        child, name = space.mutate_named(genome, rng)
        if name == "remove_skip":
            removed = True
            assert sum(len(n.inputs) for n in child.nodes) < sum(
                len(n.inputs) for n in genome.nodes
            )
            assert sum(n.is_merge for n in child.nodes) <= merges
            break
    assert removed


def test_crossover_mixes_parameters_of_aligned_nodes() -> None:
    space = NetworkSearchSpace()
    a = mnist1d_cnn_genome(channels=25)
    b = mnist1d_cnn_genome(channels=64, activation="tanh")
    rng = np.random.default_rng(3)
    mixed = False
    for _ in range(10):
        c1, c2 = space.crossover(a, b, rng)
        assert [n.id for n in c1.nodes] == [n.id for n in a.nodes]
        filters = {n.p.get("filters") for n in c1.nodes if n.op == "conv"}
        mixed |= filters == {25, 64}
        pairs = zip(c1.nodes, c2.nodes, strict=True)
        assert all({x.p.get("filters"), y.p.get("filters")} <= {25, 64, None} for x, y in pairs)
    assert mixed


def _gaussian(task: TaskSpec, n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *task.input_shape)).astype("float32")


def test_build_compiles_initializes_and_attaches_the_report() -> None:
    task = TASKS[0]
    model = NetworkSearchSpace().build(mnist1d_cnn_genome(), task, seed=0)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.loss == "sparse_categorical_crossentropy"
    layers = {e["name"]: e for e in model.signal_report.to_dict()["layers"]}
    assert layers["logits"]["var"] == pytest.approx(1.0, rel=0.05)
    assert [type(model.get_layer(f"n{k}_conv")).__name__ for k in (0, 2, 4)] == ["Conv1D"] * 3
    assert model.get_layer("head_input").output.shape == (None, 125)
    probs = model.predict(_gaussian(task), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    history = model.fit(_gaussian(task), np.arange(32) % 10, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_default_init_is_seeded_and_differs_from_autoinit() -> None:
    task = TASKS[0]
    space = NetworkSearchSpace()
    a = space.build(mnist1d_mlp_genome(), task, init="default", seed=5)
    b = space.build(mnist1d_mlp_genome(), task, init="default", seed=5)
    c = space.build(mnist1d_mlp_genome(), task, init="autoinit", seed=5)
    wa, wb, wc = (m.get_layer("n1_dense").kernel.numpy() for m in (a, b, c))
    np.testing.assert_array_equal(wa, wb)
    assert not np.allclose(wa, wc)
    assert not hasattr(a, "signal_report") and hasattr(c, "signal_report")
    with pytest.raises(ValueError, match="init"):
        space.build(mnist1d_mlp_genome(), task, init="he")


def test_merges_of_mismatched_shapes_are_resolved_by_the_builder() -> None:
    nodes = (
        Node.make("a", "conv", INPUT, filters=8, kernel_size=3, strides=2),
        Node.make("b", "max_pool", "a", pool_size=3, strides=2),
        Node.make("c", "flatten", "b"),
        Node.make("d", "dense", "c", units=7),
        Node.make("m", "add", ["b", INPUT, "a"]),
        Node.make("k", "concat", ["m", "d", "a"]),
        Node.make("e", "activation", "k", expression="alpha*tanh(beta*x) + gamma*x"),
    )
    genome = NetworkGenome(nodes, "e", "global_avg")
    for task in TASKS:
        model = NetworkSearchSpace().build(genome, task, seed=1)
        assert np.all(np.isfinite(model.predict(_gaussian(task), verbose=0)))
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert genome_size(genome, task) == (len(model.layers) - 1, trainable)


def test_layer_norm_of_a_single_channel_map_normalizes_over_positions() -> None:
    """LayerNormalization over one channel would output beta alone; the builder normalizes the
    whole map instead, so the signal survives (predicted and measured variance ~1)."""
    nodes = (
        Node.make("n", "layer_norm", INPUT),
        Node.make("c", "conv", "n", filters=8, kernel_size=3, strides=1),
    )
    genome = NetworkGenome(nodes, "c", "flatten")
    task = TaskSpec((40, 1), 10)
    model = NetworkSearchSpace().build(genome, task, seed=0)
    norm = model.get_layer("n_layer_norm")
    assert list(norm.axis) == [1, 2]
    report = model.signal_report.measure(model, samples=256, seed=0)
    entry = next(e for e in report.layers if e.name == "n_layer_norm")
    assert entry.var == pytest.approx(1.0, rel=0.01)
    assert entry.measured_var == pytest.approx(1.0, rel=0.05)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert genome_size(genome, task) == (len(model.layers) - 1, trainable)


@pytest.mark.parametrize("task", TASKS[:2], ids=["sequence", "image"])
def test_a_spatial_op_after_flatten_sees_the_flattened_map(task: TaskSpec) -> None:
    """conv -> flatten -> activation -> conv: the second conv runs over the first conv's map
    (same positions, its channels), not over a 1-channel sequence of every value; a Dense in
    between (units, no layout) still gives a 1-channel sequence."""
    nodes = (
        Node.make("a", "conv", INPUT, filters=6, kernel_size=3, strides=1),
        Node.make("f", "flatten", "a"),
        Node.make("r", "activation", "f", function="relu"),
        Node.make("c", "conv", "r", filters=4, kernel_size=3, strides=1),
        Node.make("d", "dense", "f", units=9),
        Node.make("p", "max_pool", "d", pool_size=2, strides=1),
        Node.make("k", "concat", ["c", "p"]),
    )
    genome = NetworkGenome(nodes, "k", "global_max")
    model = NetworkSearchSpace().build(genome, task, seed=0)
    spatial = tuple(task.input_shape[:-1])
    assert tuple(model.get_layer("c_as_map").output.shape[1:]) == (*spatial, 6)
    assert tuple(model.get_layer("c_conv").output.shape[1:]) == (*spatial, 4)
    assert tuple(model.get_layer("p_as_seq").output.shape[1:]) == (9, 1)
    first = model.get_layer("a_conv")
    x = _gaussian(task)
    rebuilt = keras.Model(model.inputs, model.get_layer("c_as_map").output)
    np.testing.assert_allclose(  # the reshape restores the map exactly (after the relu)
        rebuilt.predict(x, verbose=0),
        np.maximum(keras.Model(model.inputs, first.output).predict(x, verbose=0), 0),
        rtol=1e-6,
    )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert genome_size(genome, task) == (len(model.layers) - 1, trainable)


def test_a_sum_with_a_flattened_map_keeps_its_layout() -> None:
    """flatten(conv) + a Dense of the input (projected to the same size), then a conv: the sum
    is per element in the flattened map's order, so the conv runs over that map."""
    nodes = (
        Node.make("a", "conv", INPUT, filters=5, kernel_size=3, strides=1),
        Node.make("f", "flatten", "a"),
        Node.make("d", "dense", INPUT, units=3),
        Node.make("g", "flatten", "d"),
        Node.make("u", "dense", "g", units=7),
        Node.make("m", "add", ["f", "u"]),
        Node.make("c", "conv", "m", filters=4, kernel_size=3, strides=1),
    )
    task = TaskSpec((40, 1), 10)
    model = NetworkSearchSpace().build(NetworkGenome(nodes, "c", "global_avg"), task, seed=0)
    assert tuple(model.get_layer("c_as_map").output.shape[1:]) == (40, 5)
    assert tuple(model.get_layer("c_conv").output.shape[1:]) == (40, 4)


@pytest.mark.parametrize("chain", range(6))
def test_random_chains_build_with_finite_autoinit_forward_pass(chain: int) -> None:
    rng = np.random.default_rng(100 + chain)
    genome = _chain(NetworkSearchSpace(expression_rate=0.3), rng, 8)
    task = TASKS[chain % len(TASKS)]
    model = NetworkSearchSpace().build(genome, task, seed=chain)
    out = model.predict(_gaussian(task), verbose=0)
    assert np.all(np.isfinite(out)), genome.summary()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert genome_size(genome, task) == (len(model.layers) - 1, trainable)


def test_build_rejects_foreign_genomes_and_bad_tasks() -> None:
    space = NetworkSearchSpace()
    with pytest.raises(InvalidGenomeError):
        space.build(object(), TASKS[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_shape"):
        space.build(mnist1d_cnn_genome(), TaskSpec((2, 3, 4, 5), 10))


@pytest.mark.slow
def test_ten_thousand_mutation_chains_decode_to_finite_autoinit_models() -> None:
    space = NetworkSearchSpace(expression_rate=0.3)
    rng = np.random.default_rng(2024)
    failures, invalid = [], 0
    for k in range(10_000):
        genome = _chain(space, rng, int(rng.integers(1, 10)))
        task = TASKS[k % len(TASKS)]
        try:
            model = space.build(genome, task, seed=k, compile=False)
        except InvalidGenomeError as err:  # allowed by the contract, with a reason
            assert genome.hash() in str(err) or "node" in str(err), str(err)
            invalid += 1
            continue
        out = model(_gaussian(task, 8), training=False)
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(out))):
            failures.append(genome.to_json())
        if k % 200 == 199:
            keras.backend.clear_session()
    assert not failures, failures[:3]
    assert invalid < 500  # the builder resolves shapes; only lost signals are invalid


def test_seed_genomes_can_be_named_and_seed_the_population() -> None:
    space = NetworkSearchSpace(seeds=("mnist1d_cnn", mnist1d_mlp_genome().to_json()), seed_rate=1.0)
    assert space.seeds == (mnist1d_cnn_genome(), mnist1d_mlp_genome())
    rng = np.random.default_rng(9)
    ids = {n.id for n in mnist1d_cnn_genome().nodes} | {n.id for n in mnist1d_mlp_genome().nodes}
    for _ in range(10):
        genome = space.sample(rng)  # one mutation away from a seed
        assert len({n.id for n in genome.nodes} & ids) >= 4
    with pytest.raises(InvalidGenomeError, match="mnist1d_rnn"):
        NetworkSearchSpace(seeds=("mnist1d_rnn",))


def test_parameter_limit_is_kept_by_sampling_and_enforced_by_build() -> None:
    task = TASKS[0]
    space = NetworkSearchSpace(max_params=20_000, input_shape=task.input_shape)
    rng = np.random.default_rng(11)
    genome = space.sample(rng)
    for _ in range(100):
        assert genome_size(genome, task)[1] <= 20_000
        genome = space.mutate(genome, rng)
    big = NetworkGenome(
        (Node.make("a", "flatten", INPUT), Node.make("b", "dense", "a", units=1000)), "b"
    )
    with pytest.raises(InvalidGenomeError, match="max_params"):
        space.validate(big)
    with pytest.raises(InvalidGenomeError, match="51,010 trainable parameters"):
        space.build(big, task)
