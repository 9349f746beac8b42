"""Random-graph generators: exact structure, statistics against theory, seeds, input checks."""

from __future__ import annotations

import logging
import math
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from lpm_graph.datasets import (
    complete_graph,
    configuration_model,
    erdos_renyi,
    stochastic_block_model,
    watts_strogatz,
)
from lpm_graph.datasets._pairs import _pair_stubs, _triangle_pair


def contacts(graph) -> set[tuple[int, int]]:
    """The undirected contacts ``(i, j)``, ``i < j``, after checking the storage is simple
    and symmetric: no self-loops, no repeated edge, every ``j -> i`` has its ``i -> j``."""
    src, dst = graph.edge_index().tolist()
    edges = list(zip(src, dst))
    assert all(j != i for j, i in edges), "self-loop"
    assert len(set(edges)) == len(edges), "repeated edge"
    assert set(edges) == {(i, j) for j, i in edges}, "edge without its reverse"
    return {(j, i) for j, i in edges if j < i}


def degrees(graph) -> np.ndarray:
    return np.bincount(graph.edge_index()[1].numpy(), minlength=graph.num_nodes())


def to_networkx(graph) -> nx.Graph:
    out = nx.Graph(list(contacts(graph)))
    out.add_nodes_from(range(graph.num_nodes()))
    return out


def quiet(make, *args, **kwargs):
    """Call a generator whose heavy erasure warning is expected and not under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make(*args, **kwargs)


# ---------------------------------------------------------------------------- configuration model


def test_configuration_model_all_ones_is_a_perfect_matching():
    # one stub per agent: no stub can meet its own agent or a second stub of a partner
    graph = configuration_model([1] * 1000, seed=3)
    assert graph.data.erased_edges == 0
    assert graph.data.erased_fraction == 0.0
    assert degrees(graph).tolist() == [1] * 1000
    assert len(contacts(graph)) == 500


def test_configuration_model_forced_erasures_by_hand():
    # one agent with two stubs: the only pairing is a self-loop, erased
    graph = quiet(configuration_model, [2])
    assert graph.num_edges() == 0
    assert (graph.data.erased_edges, graph.data.erased_fraction) == (1, 1.0)
    # two agents with three stubs each: either three 0-1 pairs (two repeats erased) or a
    # self-loop at each agent plus one 0-1 pair (two self-loops erased): one contact either way
    for seed in range(5):
        graph = quiet(configuration_model, [3, 3], seed=seed)
        assert contacts(graph) == {(0, 1)}
        assert graph.data.erased_edges == 2
        assert graph.data.erased_fraction == pytest.approx(2 / 3)


def test_configuration_model_two_stubs_each_pairs_as_one_of_three_matchings():
    # stubs 0, 0, 1, 1 have three perfect matchings, equally likely: {00, 11} leaves no
    # contact (two self-loops erased), the two {01, 01} leave one (one repeat erased)
    trials, empty = 300, 0
    for seed in range(trials):
        graph = quiet(configuration_model, [2, 2], seed=seed)
        if graph.num_edges() == 0:
            assert graph.data.erased_edges == 2
            empty += 1
        else:
            assert contacts(graph) == {(0, 1)}
            assert graph.data.erased_edges == 1
    assert abs(empty / trials - 1 / 3) < 4 * math.sqrt(2 / 9 / trials)


def test_configuration_model_erases_exactly_the_self_loops_and_repeats():
    # heavy-tailed degrees, so that many stubs are erased; networkx does the erasing here
    rng = np.random.default_rng(0)
    target = np.minimum(rng.zipf(2.1, 3000), 300)
    target[0] += target.sum() % 2
    seed = 11
    graph = quiet(configuration_model, torch.from_numpy(target), seed=seed)
    # the stub pairing behind the graph: configuration_model pairs with default_rng(seed)
    # before drawing anything else when the degrees are given
    u, v = _pair_stubs(target, np.random.default_rng(seed))
    multi = nx.MultiGraph()
    multi.add_nodes_from(range(target.size))
    multi.add_edges_from(zip(u.tolist(), v.tolist()))
    assert [multi.degree(i) for i in range(target.size)] == target.tolist()  # a self-loop counts 2
    simple = nx.Graph(multi)
    simple.remove_edges_from(list(nx.selfloop_edges(simple)))
    erased_per_node = target - np.array([simple.degree(i) for i in range(target.size)])
    assert erased_per_node.sum() > 100  # the test has teeth

    assert contacts(graph) == {tuple(sorted(e)) for e in simple.edges()}
    assert np.array_equal(degrees(graph), target - erased_per_node)
    assert torch.equal(graph["agent"].target_degree, torch.from_numpy(target))
    assert graph["agent"].target_degree.dtype == torch.int64
    erased = multi.number_of_edges() - simple.number_of_edges()
    assert graph.data.erased_edges == erased
    assert graph.data.erased_fraction == erased / (target.sum() // 2)


def test_configuration_model_poisson_degrees_erase_as_theory_says():
    # expected erased pairs for a light tail (independent of n): nu / 2 self-loops and
    # nu^2 / 4 repeats, nu = (<k^2> - <k>) / <k> = 10 for Poisson(10), so about 30 of 500,000
    n = 100_000
    graph = configuration_model(
        num_nodes=n, distribution=lambda size, gen: gen.poisson(10.0, size), seed=5
    )
    target = graph["agent"].target_degree.double()
    nu = float(((target**2).mean() - target.mean()) / target.mean())
    expected = nu / 2 + nu**2 / 4
    assert graph.data.erased_fraction < 1e-3
    assert abs(graph.data.erased_edges - expected) < 4 * math.sqrt(expected)
    assert int(target.sum()) - degrees(graph).sum() == 2 * graph.data.erased_edges


@pytest.mark.parametrize(
    "distribution",
    [{2: 0.5, 5: 0.3, 10: 0.2}, [0.0, 0.25, 0.5, 0.25], torch.tensor([0.1, 0.0, 0.9])],
    ids=["dict", "list-pmf", "tensor-pmf"],
)
def test_configuration_model_samples_the_degree_distribution(distribution):
    if isinstance(distribution, dict):
        support, pmf = np.array(list(distribution)), np.array(list(distribution.values()))
    else:
        pmf = np.asarray(distribution, dtype=np.float64)
        support = np.arange(pmf.size)
    n = 40_000
    graph = configuration_model(num_nodes=n, distribution=distribution, seed=2)
    target = graph["agent"].target_degree.numpy()
    mean = (support * pmf).sum()
    sd = math.sqrt((support**2 * pmf).sum() - mean**2)
    assert abs(target.mean() - mean) < 4 * sd / math.sqrt(n)
    for k, p in zip(support, pmf):  # every degree's share, within 4 binomial sd
        assert abs((target == k).mean() - p) < 4 * math.sqrt(p * (1 - p) / n) + 1 / n
    assert np.isin(target, support).sum() >= n - 1  # the parity fix moves at most one agent


def test_configuration_model_fixes_an_odd_sampled_sum_with_one_stub():
    graph = quiet(configuration_model, num_nodes=3, distribution=lambda n, gen: np.ones(n, int))
    assert sorted(graph["agent"].target_degree.tolist()) == [1, 1, 2]
    assert graph.data.erased_edges + degrees(graph).sum() // 2 == 2


def test_configuration_model_warns_and_logs_the_erased_fraction(caplog):
    # a third of the hub's 501 stubs meet another hub stub: ~83 of 750 pairs are self-loops
    target = [501] + [1] * 999
    with (
        caplog.at_level(logging.INFO, logger="lpm_graph"),
        pytest.warns(UserWarning, match="erased"),
    ):
        graph = configuration_model(target, seed=0)
    assert graph.data.erased_fraction > 0.05
    assert "erased" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configuration_model([4] * 1000, seed=0)  # light tail: no warning


# ---------------------------------------------------------------------------- Watts-Strogatz


def test_watts_strogatz_p0_is_the_ring_lattice():
    n, k = 30, 6
    graph = watts_strogatz(n, k, 0.0, seed=4)
    assert graph.num_edges() == n * k
    assert degrees(graph).tolist() == [k] * n
    near = to_networkx(graph)
    for i in range(n):
        ring = {(i + d) % n for d in range(-k // 2, k // 2 + 1) if d}
        assert set(near[i]) == ring


@pytest.mark.parametrize("k", [4, 6, 10])
def test_watts_strogatz_p0_clustering_is_the_lattice_value(k):
    graph = watts_strogatz(60, k, 0.0)
    assert nx.average_clustering(to_networkx(graph)) == pytest.approx(3 * (k - 2) / (4 * (k - 1)))


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_watts_strogatz_keeps_the_contact_count_and_rewires_a_share_p(p):
    n, k = 2000, 10
    graph = watts_strogatz(n, k, p, seed=8)
    edges = contacts(graph)
    assert len(edges) == n * k // 2
    assert degrees(graph).min() >= k // 2  # every agent keeps the edges it did not rewire
    lattice = {tuple(sorted((i, (i + d) % n))) for i in range(n) for d in range(1, k // 2 + 1)}
    moved, expected = len(edges - lattice), p * n * k / 2
    if p < 0.5:  # few rewired edges land back on a vacated lattice pair
        assert abs(moved - expected) < 4 * math.sqrt(expected * (1 - p))


def test_watts_strogatz_p1_clustering_is_that_of_a_random_graph():
    n, k = 2000, 10
    clustering = nx.average_clustering(to_networkx(watts_strogatz(n, k, 1.0, seed=1)))
    assert 0.5 * k / n < clustering < 2 * k / n  # the lattice has 2/3


def test_watts_strogatz_dense_corner_cases_terminate_simple():
    # n = 5, k = 4 is the complete graph: nothing can move
    assert contacts(watts_strogatz(5, 4, 1.0)) == contacts(complete_graph(5))
    for seed in range(20):
        assert len(contacts(watts_strogatz(7, 4, 1.0, seed=seed))) == 14


# ---------------------------------------------------------------------------- SBM


def test_stochastic_block_model_block_pair_counts_are_binomial():
    sizes = [10_000, 6_000, 4_000]
    probs = [[4e-4, 1e-4, 0.0], [1e-4, 1e-3, 2e-4], [0.0, 2e-4, 2e-3]]
    graph = stochastic_block_model(sizes, probs, seed=6)
    block = graph["agent"].block
    assert block.dtype == torch.int64
    assert torch.equal(block, torch.repeat_interleave(torch.arange(3), torch.tensor(sizes)))
    edges = np.array(sorted(contacts(graph)))
    a, b = block.numpy()[edges[:, 0]], block.numpy()[edges[:, 1]]
    for x in range(3):
        for y in range(x, 3):
            pairs = sizes[x] * (sizes[x] - 1) // 2 if x == y else sizes[x] * sizes[y]
            mean = pairs * probs[x][y]
            count = int(((a == x) & (b == y)).sum() + (x != y) * ((a == y) & (b == x)).sum())
            assert abs(count - mean) <= 4 * math.sqrt(mean * (1 - probs[x][y]))


def test_stochastic_block_model_joins_every_pair_with_its_probability():
    # small blocks, dense and sparse block pairs: each pair's frequency over many seeds
    sizes, probs = [4, 3], np.array([[0.3, 0.8], [0.8, 1.0]])
    block = np.repeat([0, 1], sizes)
    trials = 400
    seen = np.zeros((7, 7))
    for seed in range(trials):
        for i, j in contacts(stochastic_block_model(sizes, probs, seed=seed)):
            seen[i, j] += 1
    for i in range(7):
        for j in range(i + 1, 7):
            p = probs[block[i], block[j]]
            assert abs(seen[i, j] / trials - p) <= 4.5 * math.sqrt(p * (1 - p) / trials)


def test_triangle_ranks_map_to_their_pairs_up_to_huge_blocks():
    # the first and last pair of row j, up to blocks of 2e9 agents (ranks near 1.5e18);
    # beyond ~1e8 the float square root alone is off by one for the last pair of some rows
    j = np.array([1, 2, 3, 10, 999_999, 10**7 + 1, 94_906_267, 373_586_685, 1_712_038_269])
    first = j * (j - 1) // 2
    i, jj = _triangle_pair(np.concatenate([first, first + j - 1]))
    assert i.tolist() == [0] * j.size + (j - 1).tolist()
    assert jj.tolist() == j.tolist() * 2


def test_stochastic_block_model_extremes():
    assert contacts(stochastic_block_model([3, 4], [[1, 1], [1, 1]])) == contacts(complete_graph(7))
    graph = stochastic_block_model([3, 0, 4], np.eye(3))  # two cliques, no bridge
    assert contacts(graph) == {(0, 1), (0, 2), (1, 2)} | {
        (i, j) for i in range(3, 7) for j in range(i + 1, 7)
    }


# ---------------------------------------------------------------------------- all generators

GENERATORS = {
    "configuration_model": lambda seed: configuration_model([3] * 200, seed=seed),
    "configuration_model-distribution": lambda seed: configuration_model(
        num_nodes=200, distribution={2: 0.5, 4: 0.5}, seed=seed
    ),
    "watts_strogatz": lambda seed: watts_strogatz(200, 4, 0.3, seed=seed),
    "stochastic_block_model": lambda seed: stochastic_block_model(
        [100, 100], [[0.05, 0.01], [0.01, 0.05]], seed=seed
    ),
    "erdos_renyi": lambda seed: erdos_renyi(200, 4.0, seed=seed),
}


@pytest.mark.parametrize("make", GENERATORS.values(), ids=GENERATORS.keys())
def test_same_seed_same_graph_other_seed_other_graph(make):
    graph = make(7)
    assert graph.relations == [("agent", "contact", "agent")]
    assert torch.equal(graph.edge_index(), make(7).edge_index())
    other = make(8).edge_index()
    assert other.shape != graph.edge_index().shape or not torch.equal(other, graph.edge_index())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: configuration_model([2, -1, 1]),
            r"degrees must be non-negative, got -1 at index 1",
        ),
        (lambda: configuration_model([2.0, float("nan")]), r"degrees must hold whole numbers"),
        (lambda: configuration_model([1.5, 0.5]), r"degrees must hold whole numbers, got 1.5"),
        (lambda: configuration_model([[1, 1]]), r"degrees must be a 1-D"),
        (lambda: configuration_model([1, 2]), r"degrees sum to 3.*odd.*degrees\[i\] \+= 1"),
        (lambda: configuration_model([]), r"degrees is empty"),
        (lambda: configuration_model([1, 1], num_nodes=2), r"either degrees or num_nodes"),
        (lambda: configuration_model(num_nodes=10), r"needs degrees, or both num_nodes"),
        (lambda: configuration_model(num_nodes=2.5, distribution=[1.0]), r"num_nodes .* 2\.5"),
        (lambda: configuration_model(num_nodes=10, distribution=[0.5, 0.4]), r"sum to 0\.9"),
        (
            lambda: configuration_model(num_nodes=10, distribution={1: 1.5, 2: -0.5}),
            r"non-negative",
        ),
        (lambda: configuration_model(num_nodes=10, distribution={-1: 1.0}), r"non-negative"),
        (
            lambda: configuration_model(num_nodes=10, distribution=lambda n, gen: np.ones(n - 1)),
            r"returned 9 degrees for num_nodes=10",
        ),
        (lambda: configuration_model([1, 1], seed=-1), r"seed must be a non-negative int, got -1"),
        (lambda: watts_strogatz(10, 3, 0.1), r"k must be even .* got 3; use 2 or 4"),
        (lambda: watts_strogatz(10, 10, 0.1), r"k must be less than num_nodes = 10, got k=10"),
        (lambda: watts_strogatz(10, 2.0, 0.1), r"k must be an even int"),
        (lambda: watts_strogatz(10, 2, 1.5), r"p must be a probability in \[0, 1\].* 1\.5"),
        (lambda: watts_strogatz(10, 2, float("nan")), r"p must be a probability .* nan"),
        (lambda: watts_strogatz(10.0, 2, 0.1), r"num_nodes must be a positive int, got 10\.0"),
        (lambda: watts_strogatz(0, 0, 0.1), r"num_nodes must be a positive int, got 0"),
        (lambda: watts_strogatz(10, 2, 0.1, seed=1.5), r"seed must be a non-negative int"),
        (lambda: stochastic_block_model([2, 3], [[0.1]]), r"edge_probs must be a \[2, 2\] matrix"),
        (
            lambda: stochastic_block_model([2, 3], [[0.1, 0.2], [0.3, 0.1]]),
            r"edge_probs must be symmetric.*edge_probs\[0\]\[1\] = 0\.2",
        ),
        (lambda: stochastic_block_model([2, 3], [[0.1, 0], [0, 1.2]]), r"edge_probs .* \[0, 1\]"),
        (lambda: stochastic_block_model([2], [[float("nan")]]), r"edge_probs .* NaN"),
        (lambda: stochastic_block_model([2, -3], np.eye(2)), r"block_sizes must be non-negative"),
        (lambda: stochastic_block_model([2.5], [[0.1]]), r"block_sizes must hold whole numbers"),
        (lambda: stochastic_block_model([0, 0], np.eye(2)), r"block_sizes must hold at least one"),
        (lambda: erdos_renyi(10, 2.0, seed=-3), r"seed must be a non-negative int, got -3"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
