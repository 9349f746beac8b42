"""Seeded random-graph generators returning PopulationGraphs.

Every generator builds one node type ``"agent"`` and one relation
``("agent", "contact", "agent")`` in which each undirected contact is stored as the two
directed edges ``j -> i`` and ``i -> j``. The same ``seed`` gives a bit-identical
``edge_index``; nothing loops over nodes or edges in Python, so 1e6 agents take seconds.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from .._checks import check_memory
from ..graph import PopulationGraph
from ._pairs import _distinct, _first_of_each, _pair_stubs, _sample_distinct, _triangle_pair

__all__ = [
    "complete_graph",
    "configuration_model",
    "erdos_renyi",
    "stochastic_block_model",
    "watts_strogatz",
]

log = logging.getLogger(__name__)

DegreeDistribution = (
    Callable[[int, np.random.Generator], ArrayLike]
    | Mapping[int, float]
    | Sequence[float]
    | np.ndarray
    | Tensor
)
"""A callable ``(num_nodes, generator) -> degrees``, a ``{degree: probability}`` dict or a
1-D pmf over the degrees ``0..K``."""

ERASED_FRACTION_WARNING = 0.05  # configuration_model warns above this erased fraction


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def erdos_renyi(num_nodes: int, mean_degree: float, *, seed: int = 0) -> PopulationGraph:
    """G(n, m) random graph with ``m = round(n * mean_degree / 2)`` undirected contacts.

    Pairs are drawn uniformly; self-loops and repeated pairs are dropped and redrawn until
    ``m`` distinct contacts remain, so the result is a simple graph with exactly the requested
    mean degree. Each contact is stored as two directed edges (``2 m`` edges). Runs in
    O(m log m) and memory O(m): 1e6 agents at mean degree 10 take a few seconds.

    Args:
        num_nodes: number of agents ``n``.
        mean_degree: mean number of contacts per agent (``0 <= mean_degree < n - 1``).
        seed: random seed.
    """
    num_nodes = _check_num_nodes(num_nodes)
    if (
        isinstance(mean_degree, bool)
        or not isinstance(mean_degree, numbers.Real)
        or not (math.isfinite(mean_degree) and 0 <= mean_degree <= num_nodes - 1)
    ):
        raise ValueError(
            f"mean_degree must be in [0, num_nodes - 1] = [0, {num_nodes - 1}], "
            f"got {mean_degree!r}."
        )
    _check_seed(seed)
    m = round(num_nodes * mean_degree / 2)
    _check_fits(2 * m, num_nodes, "erdos_renyi")
    gen = _generator(seed)
    keys = torch.empty(0, dtype=torch.long)
    n = num_nodes
    while keys.numel() < m:
        need = m - keys.numel()
        draw = torch.randint(0, n, (2, int(need * 1.05) + 16), generator=gen)
        lo, hi = draw.min(0).values, draw.max(0).values
        fresh = (lo * n + hi)[lo != hi]
        keys = torch.unique(torch.cat([keys, fresh]))  # sorted, distinct
        if keys.numel() > m:  # keep a uniformly random subset of m pairs
            keys = keys[torch.randperm(keys.numel(), generator=gen)[:m]].sort().values
    edge_index = torch.stack([keys // n, keys % n])
    return PopulationGraph.from_edge_index(edge_index, n, undirected=True)


def complete_graph(num_nodes: int) -> PopulationGraph:
    """Every ordered pair ``j != i`` is an edge: ``n (n - 1)`` directed edges."""
    num_nodes = _check_num_nodes(num_nodes)
    _check_fits(num_nodes * num_nodes, num_nodes, "complete_graph")
    idx = torch.arange(num_nodes)
    src = idx.repeat_interleave(num_nodes)
    dst = idx.repeat(num_nodes)
    keep = src != dst
    return PopulationGraph.from_edge_index(torch.stack([src[keep], dst[keep]]), num_nodes)


def configuration_model(
    degrees: Tensor | np.ndarray | Sequence[int] | None = None,
    *,
    num_nodes: int | None = None,
    distribution: DegreeDistribution | None = None,
    seed: int = 0,
) -> PopulationGraph:
    """Erased configuration model: a simple graph with (nearly) a given degree sequence.

    Node ``i`` gets ``degrees[i]`` stubs; the stub list is shuffled uniformly and consecutive
    stubs are paired (Molloy and Reed 1995), then self-loops and repeated pairs are erased
    (Britton, Deijfen and Martin-Löf 2006), keeping one copy of each repeated pair. The
    result is simple, and exactly ``realised degree = target degree - erased stubs`` at every
    node. The erased share is tiny for light tails (``O(1 / n)`` of the pairs when
    ``<k^2>`` is bounded) but not for heavy ones.

    Either pass ``degrees`` or ``num_nodes`` and a degree ``distribution``. When a sampled
    sequence has an odd sum (one stub would be left unpaired), one stub is added to a node
    drawn uniformly; an explicit ``degrees`` with an odd sum raises instead.

    The returned graph carries ``graph["agent"].target_degree`` (int64, the stub counts
    actually paired: ``degrees``, or the sampled sequence after the parity fix),
    ``graph.data.erased_edges`` (int, stub pairs erased) and ``graph.data.erased_fraction``
    (float, erased pairs / all stub pairs). The fraction is logged at INFO, and a
    ``UserWarning`` is raised above 5%.

    Args:
        degrees: 1-D sequence of non-negative integers, one per agent.
        num_nodes: number of agents, when the degrees are drawn from ``distribution``.
        distribution: a callable ``(num_nodes, generator) -> int array of length num_nodes``
            taking a :class:`numpy.random.Generator`, a dict ``{degree: probability}`` or a
            1-D pmf whose entry ``k`` is the probability of degree ``k``.
        seed: random seed.

    Runs in O(S log S) time and O(S) memory for ``S`` stubs: 1e6 agents of mean degree 10
    take a few seconds.
    """
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    if degrees is not None:
        if num_nodes is not None or distribution is not None:
            raise ValueError(
                "pass either degrees or num_nodes and distribution to configuration_model, "
                "not both; the degree sequence fixes the number of agents."
            )
        target = _as_counts(degrees, "degrees")
        if target.size == 0:
            raise ValueError("degrees is empty; pass one degree per agent (at least one).")
        total = int(target.sum())
        if total % 2:
            raise ValueError(
                f"degrees sum to {total}, an odd number of stubs, so one stub cannot be "
                "paired; add or remove one stub at some agent (e.g. degrees[i] += 1)."
            )
    else:
        if num_nodes is None or distribution is None:
            raise ValueError(
                "configuration_model needs degrees, or both num_nodes and distribution; "
                f"got num_nodes={num_nodes!r} and distribution={distribution!r}."
            )
        num_nodes = _check_num_nodes(num_nodes)
        target = _sample_degrees(distribution, num_nodes, rng)
        if int(target.sum()) % 2:  # one unpaired stub: give it a partner at a random agent
            target[rng.integers(num_nodes)] += 1

    n = target.size
    u, v = _pair_stubs(target, rng)
    num_pairs = u.size
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keys = _distinct((lo * n + hi)[lo != hi])  # erase self-loops and repeats
    erased = num_pairs - keys.size
    fraction = erased / num_pairs if num_pairs else 0.0

    edge_index = torch.from_numpy(np.stack([keys // n, keys % n]))
    graph = PopulationGraph.from_edge_index(edge_index, n, undirected=True)
    graph.set_node_attrs(target_degree=torch.from_numpy(target))
    graph.data.erased_edges = int(erased)
    graph.data.erased_fraction = float(fraction)
    log.info(
        "configuration_model: erased %d of %d stub pairs (%.4g%%) as self-loops or repeats",
        erased,
        num_pairs,
        100 * fraction,
    )
    if fraction > ERASED_FRACTION_WARNING:
        warnings.warn(
            f"configuration_model erased {erased} of {num_pairs} stub pairs ({fraction:.1%}) "
            "as self-loops or repeated pairs, so realised degrees fall short of the targets, "
            "mostly at the highest-degree agents (a heavy tail); compare "
            "graph['agent'].target_degree with the realised degrees, or cap the degrees "
            "near sqrt(mean degree * num_nodes).",
            stacklevel=2,
        )
    return graph


def watts_strogatz(num_nodes: int, k: int, p: float, *, seed: int = 0) -> PopulationGraph:
    """Watts-Strogatz small world: a ring lattice whose edges are rewired with probability p.

    Agent ``i`` is first joined to ``i ± 1, ..., i ± k/2`` (mod ``n``). Each lattice edge
    ``(i, i + j)`` is then selected with probability ``p`` and its far endpoint ``i + j``
    replaced by an agent ``w`` drawn uniformly among those that are not ``i`` and not
    already joined to ``i`` (Watts and Strogatz 1998, the rule of ``networkx``). An edge
    whose ``i`` is already joined to everyone stays put, as in ``networkx``. The
    selected edges are rewired together in rounds (draw, reject clashes with the current
    graph or with each other, redraw the rejected) rather than one after another, so the
    draws differ from ``networkx`` but each rewired edge still lands uniformly on a free
    pair. Exact: ``n k / 2`` contacts for every ``p``, no self-loops or repeats; ``p = 0``
    is the ring lattice itself.

    Args:
        num_nodes: number of agents ``n``.
        k: lattice degree, even, ``0 <= k < n``.
        p: probability that an edge is rewired, in ``[0, 1]``.
        seed: random seed.

    Runs in O(r E log E) for ``E = n k / 2`` contacts and ``r`` rounds (two or three when
    ``k << n``).
    """
    n = _check_num_nodes(num_nodes)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an even int (the lattice degree), got {k!r}.")
    k = int(k)
    if k < 0 or k % 2:
        raise ValueError(
            f"k must be even and non-negative (k/2 neighbours on each side), got {k}; "
            f"use {max(k - 1, 0)} or {max(k + 1, 0)}."
        )
    if k >= n:
        raise ValueError(
            f"k must be less than num_nodes = {n}, got k={k}; use a smaller k or more "
            "agents (complete_graph builds the graph where everyone meets everyone)."
        )
    _check_probability(p, "p", "the chance that each lattice edge is rewired")
    _check_seed(seed)
    _check_fits(n * k, n, "watts_strogatz")
    rng = np.random.default_rng(seed)

    u = np.tile(np.arange(n, dtype=np.int64), k // 2)  # [E], offset-major like networkx
    far = (u + np.repeat(np.arange(1, k // 2 + 1, dtype=np.int64), n)) % n
    keys = np.minimum(u, far) * n + np.maximum(u, far)  # current contact of each edge
    pending = np.flatnonzero(rng.random(u.size) < p)  # edges still to rewire
    while pending.size:
        degree = np.bincount(keys // n, minlength=n) + np.bincount(keys % n, minlength=n)
        pending = pending[degree[u[pending]] < n - 1]  # i joined to everyone: stays put
        w = rng.integers(0, n, pending.size)
        cand = np.minimum(u[pending], w) * n + np.maximum(u[pending], w)
        occupied = np.sort(keys)  # the current graph, every pending edge still in place
        pos = np.minimum(np.searchsorted(occupied, cand), occupied.size - 1)
        ok = np.flatnonzero((w != u[pending]) & (occupied[pos] != cand))
        done = ok[_first_of_each(cand[ok])]  # two edges drew one pair: the first wins
        keys[pending[done]] = cand[done]
        pending = np.delete(pending, done)
    edge_index = torch.from_numpy(np.stack([keys // n, keys % n]))
    return PopulationGraph.from_edge_index(edge_index, n, undirected=True)


def stochastic_block_model(
    block_sizes: Tensor | np.ndarray | Sequence[int],
    edge_probs: Tensor | np.ndarray | Sequence[Sequence[float]],
    *,
    seed: int = 0,
) -> PopulationGraph:
    """Stochastic block model: agents in blocks, pairs joined with a per-block-pair chance.

    Agents ``0 .. block_sizes[0] - 1`` form block 0, the next ``block_sizes[1]`` block 1,
    and so on. Each unordered pair of distinct agents in blocks ``(a, b)`` is a contact
    independently with probability ``edge_probs[a][b]`` (Holland, Laskey and Leinhardt 1983).
    Exact, without visiting every pair: the number of contacts of each block pair is drawn
    from ``Binomial(pairs in (a, b), edge_probs[a][b])`` and that many distinct pairs are
    then drawn uniformly (the complement is drawn when more than half the pairs are
    contacts). No self-loops; ``graph["agent"].block`` (int64) is each agent's block.

    Args:
        block_sizes: 1-D sequence of non-negative block sizes (at least one agent in all).
        edge_probs: ``[B, B]`` symmetric matrix of probabilities in ``[0, 1]``.
        seed: random seed.

    Runs in O(B^2 + m log m) time and O(B^2 + m) memory for ``B`` blocks and ``m``
    contacts.
    """
    sizes = _as_counts(block_sizes, "block_sizes")
    n = int(sizes.sum())
    if n < 1:
        raise ValueError(
            f"block_sizes must hold at least one agent in all, got {sizes.tolist()}; "
            "pass positive block sizes."
        )
    probs = _as_prob_matrix(edge_probs, sizes.size)
    _check_seed(seed)
    rng = np.random.default_rng(seed)

    a, b = np.triu_indices(sizes.size)  # block pairs a <= b
    pairs = np.where(a == b, sizes[a] * (sizes[a] - 1) // 2, sizes[a] * sizes[b])
    counts = rng.binomial(pairs, probs[a, b])
    group, r = _sample_distinct(counts, pairs, rng)  # r-th pair of block pair `group`
    start = np.cumsum(sizes) - sizes
    ga, gb = a[group], b[group]
    i, j = _triangle_pair(r)  # within a block
    # across blocks, r indexes the s_a x s_b grid row by row
    cols = np.maximum(sizes[gb], 1)
    src = np.where(ga == gb, start[ga] + i, start[ga] + r // cols)
    dst = np.where(ga == gb, start[ga] + j, start[gb] + r % cols)
    edge_index = torch.from_numpy(np.stack([src, dst]))
    graph = PopulationGraph.from_edge_index(edge_index, n, undirected=True)
    block = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    graph.set_node_attrs(block=torch.from_numpy(block))
    return graph


# ---------------------------------------------------------------------------- helpers


def _sample_degrees(
    distribution: DegreeDistribution, num_nodes: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``num_nodes`` degrees from a callable, a ``{degree: p}`` dict or a pmf."""
    if callable(distribution):
        drawn = _as_counts(distribution(num_nodes, rng), "distribution(num_nodes, generator)")
        if drawn.size != num_nodes:
            raise ValueError(
                f"distribution(num_nodes, generator) returned {drawn.size} degrees for "
                f"num_nodes={num_nodes}; it must return one degree per agent."
            )
        return drawn
    if isinstance(distribution, Mapping):
        support = _as_counts(list(distribution.keys()), "the degrees (keys) of distribution")
        pmf = np.asarray(list(distribution.values()), dtype=np.float64)
    else:
        if torch.is_tensor(distribution):
            distribution = distribution.detach().cpu().numpy()
        try:
            pmf = np.asarray(distribution, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                "distribution must be a callable (num_nodes, generator) -> degrees, a dict "
                f"{{degree: probability}} or a 1-D pmf over 0..K, got {distribution!r}."
            ) from err
        if pmf.ndim != 1 or pmf.size == 0:
            raise ValueError(
                f"distribution as a pmf must be 1-D and non-empty (entry k = P(degree k)), "
                f"got shape {list(pmf.shape)}."
            )
        support = np.arange(pmf.size, dtype=np.int64)
    if not np.isfinite(pmf).all() or (pmf < 0).any():
        raise ValueError(
            f"distribution probabilities must be finite and non-negative, got {pmf.tolist()}."
        )
    if abs(pmf.sum() - 1) > 1e-6:
        raise ValueError(
            f"distribution probabilities sum to {pmf.sum():.6g}, not 1; normalise them "
            "(pmf / pmf.sum())."
        )
    return rng.choice(support, size=num_nodes, p=pmf / pmf.sum())


def _as_counts(value: object, name: str) -> np.ndarray:
    """A 1-D int64 array of non-negative whole numbers, or a ValueError naming ``name``."""
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence, got shape {list(arr.shape)}.")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}; pass an int array.")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            raise ValueError(
                f"{name} must hold whole numbers, got {arr[bad[0]]} at index {bad[0]}; "
                "pass non-negative integers."
            )
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        raise ValueError(
            f"{name} must be non-negative, got {arr[bad[0]]} at index {bad[0]}; pass counts >= 0."
        )
    return arr


def _as_prob_matrix(value: object, num_blocks: int) -> np.ndarray:
    """A symmetric ``[B, B]`` float64 matrix of probabilities, named ``edge_probs``."""
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    try:
        probs = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"edge_probs must be a [B, B] matrix of probabilities, got {value!r}."
        ) from err
    if probs.shape != (num_blocks, num_blocks):
        raise ValueError(
            f"edge_probs must be a [{num_blocks}, {num_blocks}] matrix (one row and column "
            f"per block in block_sizes), got shape {list(probs.shape)}."
        )
    if not np.isfinite(probs).all():
        raise ValueError("edge_probs contains NaN or inf; pass probabilities in [0, 1].")
    if (probs < 0).any() or (probs > 1).any():
        raise ValueError(
            "edge_probs must hold probabilities in [0, 1], got values in "
            f"[{probs.min():g}, {probs.max():g}]."
        )
    if not np.array_equal(probs, probs.T):
        a, b = np.argwhere(probs != probs.T)[0]
        raise ValueError(
            f"edge_probs must be symmetric (contacts are undirected), but "
            f"edge_probs[{a}][{b}] = {probs[a, b]:g} != edge_probs[{b}][{a}] = {probs[b, a]:g}; "
            "symmetrise it, e.g. (P + P.T) / 2."
        )
    return probs


BYTES_PER_EDGE = 48
"""Peak bytes per directed edge while a generator builds a graph (ids, sorting, the CSR)."""


def _check_fits(num_edges: int, num_nodes: int, what: str) -> None:
    """Refuse a graph that cannot be built in memory, with the estimate, before building."""
    check_memory(
        num_edges * BYTES_PER_EDGE + num_nodes * 16,
        f"{what} with {num_nodes:,} nodes and {num_edges:,} directed edges",
        "choose fewer nodes or a lower degree",
    )


def _check_num_nodes(num_nodes: object) -> int:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, numbers.Integral):
        raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}; pass an int.")
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be a positive int, got {num_nodes}; pass n >= 1.")
    return int(num_nodes)


def _check_probability(value: object, name: str, meaning: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= float(value) <= 1  # False for NaN too
    ):
        raise ValueError(f"{name} must be a probability in [0, 1] ({meaning}), got {value!r}.")


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}; pass e.g. seed=0.")
