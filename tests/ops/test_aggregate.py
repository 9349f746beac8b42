"""Every aggregation backend against an independent float64 loop reference.

The reference reduces, destination by destination, the list of messages ``w_e * x[src_e]`` of
the edges ``e`` that end there, in float64 with plain torch reductions; destinations with no
in-edge get 0 (1 for ``"prod"``). It shares no code with :mod:`lpm_graph.ops`.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lpm_graph.ops import BACKENDS, CSR, REDUCTIONS, aggregate, propagate, resolve_backend

HAS_TORCH_SCATTER = importlib.util.find_spec("torch_scatter") is not None

BACKEND_PARAMS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            name == "torch_scatter" and not HAS_TORCH_SCATTER, reason="torch-scatter not installed"
        ),
    )
    for name in BACKENDS
]

GRAPHS = ("random0", "random1", "random2", "empty", "single_edge", "duplicates", "bipartite")
WEIGHTS = ("none", "float", "scalar_tensor", "per_edge")
FEATURES = ((), (3,), (2, 3))  # x is [N], [N, 3] or [N, 2, 3]
TOL = {"rtol": 1e-6, "atol": 1e-6}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These graphs have a handful of edges: with one thread a sparse product takes microseconds,
    with two OpenMP threads on a loaded two-core machine about 10 ms (barrier cost), which
    would dominate the run. Results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_graph(name: str) -> tuple[torch.Tensor, int, int]:
    """``(edge_index, num_src, num_dst)``; every graph but ``single_edge`` has isolated nodes."""
    if name.startswith("random"):
        gen = torch.Generator().manual_seed(int(name[-1]))
        src = torch.randint(0, 8, (24,), generator=gen)
        dst = torch.randint(0, 6, (24,), generator=gen)  # nodes 6 and 7 receive nothing
        return torch.stack([src, dst]), 8, 8
    if name == "empty":
        return torch.empty(2, 0, dtype=torch.long), 5, 5
    if name == "single_edge":
        return torch.tensor([[0], [2]]), 3, 3
    if name == "duplicates":  # 0 -> 2 three times, 2 -> 0 twice, node 1 receives nothing
        return torch.tensor([[0, 0, 1, 0, 2, 2], [2, 2, 2, 2, 0, 0]]), 3, 3
    if name == "bipartite":  # 5 sources, 3 destinations, destination 2 receives nothing
        return torch.tensor([[0, 4, 1, 3, 3, 2, 0], [1, 0, 0, 1, 1, 0, 1]]), 5, 3
    raise AssertionError(name)


def make_x(num_src: int, features: tuple[int, ...], dtype: torch.dtype, seed: int = 0):
    """Values of both signs, magnitudes in [0.5, 1.5] (no zeros, so ``prod`` is well posed)."""
    gen = torch.Generator().manual_seed(100 + seed)
    shape = (num_src, *features)
    magnitude = 0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).double()
    return (magnitude * sign).to(dtype)


def make_weight(kind: str, num_edges: int, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(7)
    if kind == "none":
        return None
    if kind == "float":
        return 0.75
    if kind == "scalar_tensor":
        return torch.tensor(1.25, dtype=dtype)
    return (0.5 + torch.rand(num_edges, generator=gen, dtype=torch.float64)).to(dtype)


def reduce_reference(messages: torch.Tensor, like: torch.Tensor, reduce: str) -> torch.Tensor:
    """Reduce ``messages`` (``[k, *F]``) over its first dimension; the empty reduction if k = 0."""
    if messages.shape[0] == 0:
        return torch.ones_like(like) if reduce == "prod" else torch.zeros_like(like)
    return {
        "sum": torch.sum,
        "mean": torch.mean,
        "max": torch.amax,
        "min": torch.amin,
        "prod": torch.prod,
    }[reduce](messages, 0)


def reference_aggregate(edge_index, num_dst, messages, reduce):
    """Loop over destinations; ``messages`` is ``[E, *F]`` in edge order."""
    like = messages.new_zeros(messages.shape[1:])
    rows = [reduce_reference(messages[edge_index[1] == i], like, reduce) for i in range(num_dst)]
    return torch.stack(rows)


def reference_propagate(edge_index, num_dst, x, weight, reduce):
    """Messages ``w_e * x[src_e]``, then the loop over destinations; differentiable."""
    messages = x[edge_index[0]]  # [E, *F]
    if torch.is_tensor(weight) and weight.dim() == 1:
        messages = messages * weight.reshape(-1, *([1] * (x.dim() - 1)))
    elif weight is not None:
        messages = messages * weight
    return reference_aggregate(edge_index, num_dst, messages, reduce)


def as_float64(weight):
    return weight.double() if torch.is_tensor(weight) else weight


def case(**kwargs) -> str:
    return " ".join(f"{k}={v}" for k, v in kwargs.items())


# ---------------------------------------------------------------------------- forward values


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_propagate_matches_reference(graph, backend):
    edge_index, num_src, num_dst = make_graph(graph)
    csr = CSR.from_edge_index(edge_index, num_src, num_dst)
    for features in FEATURES:
        x = make_x(num_src, features, torch.float32)
        for weight_kind in WEIGHTS:
            weight = make_weight(weight_kind, edge_index.shape[1], torch.float32)
            for reduce in REDUCTIONS:
                out = propagate(csr, x, weight, reduce, backend)
                expected = reference_propagate(
                    edge_index, num_dst, x.double(), as_float64(weight), reduce
                )
                label = case(features=features, weight=weight_kind, reduce=reduce)
                assert out.shape == (num_dst, *features), label
                assert out.dtype == torch.float32, label
                torch.testing.assert_close(out.double(), expected, **TOL, msg=label)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_aggregate_matches_reference(graph, backend):
    edge_index, num_src, num_dst = make_graph(graph)
    csr = CSR.from_edge_index(edge_index, num_src, num_dst)
    for features in FEATURES:
        messages = make_x(edge_index.shape[1], features, torch.float32, seed=1)  # [E, *F]
        for reduce in REDUCTIONS:
            out = aggregate(messages, csr, reduce, backend)
            expected = reference_aggregate(edge_index, num_dst, messages.double(), reduce)
            label = case(features=features, reduce=reduce)
            assert out.shape == (num_dst, *features), label
            torch.testing.assert_close(out.double(), expected, **TOL, msg=label)


def test_reference_is_not_trivial():
    # Guards the reference itself: hand values on the bipartite graph, sum and max.
    edge_index, num_src, num_dst = make_graph("bipartite")
    x = torch.arange(1.0, 6.0, dtype=torch.float64)  # x[j] = j + 1
    # destination 0 <- sources 4, 1, 2 (x = 5, 2, 3); 1 <- 0, 3, 3, 0 (x = 1, 4, 4, 1); 2 <- none
    assert reference_propagate(edge_index, num_dst, x, None, "sum").tolist() == [10.0, 10.0, 0.0]
    assert reference_propagate(edge_index, num_dst, x, 2.0, "max").tolist() == [10.0, 8.0, 0.0]
    assert reference_propagate(edge_index, num_dst, x, None, "prod").tolist() == [30.0, 16.0, 1.0]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_isolated_destinations_get_the_empty_reduction(reduce, backend):
    # 0 -> 1 and 2 -> 1 only: destinations 0, 2 and 3 have no in-edge.
    csr = CSR.from_edge_index(torch.tensor([[0, 2], [1, 1]]), 4, 4)
    x = torch.tensor([-3.0, 5.0, -2.0, 7.0])
    empty = 1.0 if reduce == "prod" else 0.0
    by_hand = {"sum": -5.0, "mean": -2.5, "max": -2.0, "min": -3.0, "prod": 6.0}[reduce]

    for out in (
        propagate(csr, x, None, reduce, backend),
        aggregate(x[[0, 2]], csr, reduce, backend),
    ):
        assert out.tolist() == [empty, by_hand, empty, empty]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_duplicate_edges_count_as_parallel_contacts(backend):
    csr = CSR.from_edge_index(torch.tensor([[0, 0, 0, 1], [1, 1, 1, 0]]), 2, 2)
    x = torch.tensor([2.0, 5.0])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert propagate(csr, x, weight, "sum", backend).tolist() == [20.0, 12.0]
    assert propagate(csr, x, None, "mean", backend).tolist() == [5.0, 2.0]
    assert propagate(csr, x, weight, "max", backend).tolist() == [20.0, 6.0]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_aggregate_rejects_wrong_number_of_messages(backend):
    csr = CSR.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2, 2)
    with pytest.raises(ValueError, match=r"messages has 3 rows but the relation has 2 edges"):
        aggregate(torch.ones(3), csr, "sum", backend)


# ---------------------------------------------------------------------------- gradients


def grads(out: torch.Tensor, inputs: list[torch.Tensor], cotangent: torch.Tensor):
    """Gradients of ``<out, cotangent>``; zeros where ``out`` does not depend on an input."""
    if not out.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    got = torch.autograd.grad((out * cotangent).sum(), inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, got)]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_propagate_gradients_match_reference(graph, backend):
    # The cotangent is positive: a negative one on tied max/min messages hits the csr bug
    # pinned separately by test_csr_max_min_gradient_splits_ties_for_any_cotangent.
    edge_index, num_src, num_dst = make_graph(graph)
    csr = CSR.from_edge_index(edge_index, num_src, num_dst)
    for features in FEATURES[:2]:
        cotangent = make_x(num_dst, features, torch.float64, seed=2)
        for weight_kind in ("none", "scalar_tensor", "per_edge"):
            for reduce in REDUCTIONS:
                x = make_x(num_src, features, torch.float64).requires_grad_()
                weight = make_weight(weight_kind, edge_index.shape[1], torch.float64)
                inputs = [x] if weight is None else [x, weight.requires_grad_()]
                got = grads(propagate(csr, x, weight, reduce, backend), inputs, cotangent)
                expected = grads(
                    reference_propagate(edge_index, num_dst, x, weight, reduce), inputs, cotangent
                )
                label = case(features=features, weight=weight_kind, reduce=reduce)
                for g, e in zip(got, expected):
                    torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10, msg=label)
                if graph != "empty":  # the comparison must see a non-trivial gradient
                    assert all(bool(e.abs().sum() > 0) for e in expected), label


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_aggregate_gradients_match_reference(graph, backend):
    edge_index, num_src, num_dst = make_graph(graph)
    csr = CSR.from_edge_index(edge_index, num_src, num_dst)
    cotangent = make_x(num_dst, (3,), torch.float64, seed=4)  # both signs: messages never tie
    for reduce in REDUCTIONS:
        messages = make_x(edge_index.shape[1], (3,), torch.float64, seed=3).requires_grad_()
        (got,) = grads(aggregate(messages, csr, reduce, backend), [messages], cotangent)
        (expected,) = grads(
            reference_aggregate(edge_index, num_dst, messages, reduce), [messages], cotangent
        )
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=reduce)


TIE_BUG = (
    "csr backend: torch.segment_reduce's max/min backward gives each tied message the whole "
    "gradient instead of an equal share when the upstream gradient is negative "
    "(ops/aggregate.py _reduce_messages)"
)


TIE_CASES = [
    pytest.param(
        sign,
        backend,
        marks=param.marks,
        id=f"{backend}-{'negative' if sign < 0 else 'positive'}",
    )
    for backend, param in zip(BACKENDS, BACKEND_PARAMS)
    for sign in (1.0, -1.0)
]


@pytest.mark.parametrize(("sign", "backend"), TIE_CASES)
@pytest.mark.parametrize("reduce", ("max", "min"))
def test_csr_max_min_gradient_splits_ties_for_any_cotangent(sign, reduce, backend):
    # 0 -> 1 twice: the two messages tie, d out[1] / d x[0] = 1 whoever gets the share.
    csr = CSR.from_edge_index(torch.tensor([[0, 0, 1], [1, 1, 0]]), 2, 2)
    x = torch.tensor([3.0, -1.0], dtype=torch.float64, requires_grad=True)
    out = propagate(csr, x, None, reduce, backend)
    (grad,) = torch.autograd.grad(out, x, torch.tensor([0.0, 2.0 * sign], dtype=torch.float64))
    assert grad.tolist() == [2.0 * sign, 0.0]


@pytest.mark.parametrize("reduce", ("sum", "mean"))
@pytest.mark.parametrize("features", ((), (2,)), ids=["1d", "2d"])
@pytest.mark.parametrize("graph", ("duplicates", "bipartite"))
def test_csr_gradcheck(graph, features, reduce):
    edge_index, num_src, num_dst = make_graph(graph)
    csr = CSR.from_edge_index(edge_index, num_src, num_dst)
    x = make_x(num_src, features, torch.float64).requires_grad_()
    weight = make_weight("per_edge", edge_index.shape[1], torch.float64).requires_grad_()
    scalar = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)

    assert torch.autograd.gradcheck(lambda a, w: propagate(csr, a, w, reduce, "csr"), (x, weight))
    assert torch.autograd.gradcheck(lambda a, w: propagate(csr, a, w, reduce, "csr"), (x, scalar))


@pytest.mark.parametrize("features", ((), (2,)), ids=["1d", "2d"])
@pytest.mark.parametrize("graph", ("duplicates", "bipartite"))
def test_csr_sum_gradgradcheck(graph, features):
    edge_index, num_src, num_dst = make_graph(graph)
    csr = CSR.from_edge_index(edge_index, num_src, num_dst)
    x = make_x(num_src, features, torch.float64).requires_grad_()
    weight = make_weight("per_edge", edge_index.shape[1], torch.float64).requires_grad_()

    assert torch.autograd.gradgradcheck(
        lambda a, w: propagate(csr, a, w, "sum", "csr"), (x, weight)
    )


def test_csr_sum_hessian_vector_product_is_exact():
    # f(x, w) = sum_i (sum_{j->i} w_e x_j)^2 has d2f/dx2 = 2 A^T A, with A the dense adjacency.
    edge_index, n, _ = make_graph("random2")
    csr = CSR.from_edge_index(edge_index, n, n)
    w = make_weight("per_edge", edge_index.shape[1], torch.float64)
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    adjacency.index_put_((edge_index[1], edge_index[0]), w, accumulate=True)
    x = make_x(n, (), torch.float64).requires_grad_()
    v = make_x(n, (), torch.float64, seed=5)

    (g,) = torch.autograd.grad(
        propagate(csr, x, w, "sum", "csr").pow(2).sum(), x, create_graph=True
    )
    (hvp,) = torch.autograd.grad(g, x, v)
    torch.testing.assert_close(hvp, 2 * adjacency.T @ adjacency @ v)


# ---------------------------------------------------------------------------- choices


@pytest.mark.parametrize("fn", ("propagate", "aggregate"))
def test_unknown_reduce_names_the_valid_choices(fn):
    csr = CSR.from_edge_index(torch.tensor([[0], [1]]), 2, 2)
    call = {
        "propagate": lambda: propagate(csr, torch.ones(2), None, "average"),
        "aggregate": lambda: aggregate(torch.ones(1), csr, "average"),
    }[fn]
    with pytest.raises(ValueError, match=r"reduce='average'.*'sum', 'mean', 'max', 'min', 'prod'"):
        call()


@pytest.mark.parametrize("fn", ("propagate", "aggregate"))
def test_unknown_backend_names_the_valid_choices(fn):
    csr = CSR.from_edge_index(torch.tensor([[0], [1]]), 2, 2)
    call = {
        "propagate": lambda: propagate(csr, torch.ones(2), None, "sum", "cuda"),
        "aggregate": lambda: aggregate(torch.ones(1), csr, "sum", "cuda"),
    }[fn]
    with pytest.raises(ValueError, match=r"backend='cuda'.*'csr', 'native', 'torch_scatter'"):
        call()


def test_auto_and_none_resolve_to_csr():
    assert resolve_backend(None) == "csr"
    assert resolve_backend("auto") == "csr"
    assert resolve_backend("native") == "native"


@pytest.mark.skipif(HAS_TORCH_SCATTER, reason="torch-scatter is installed")
def test_missing_torch_scatter_says_how_to_install_it():
    with pytest.raises(ValueError, match=r"torch_scatter.*pip install lpm-graph\[scatter\]"):
        resolve_backend("torch_scatter")


@pytest.mark.parametrize("backend", ["csr", "native"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_float64_weights_with_float32_features_give_float32_on_every_backend(backend, reduce):
    from lpm_graph.datasets import erdos_renyi

    graph = erdos_renyi(50, 4, seed=1)
    weight = torch.rand(graph.num_edges(), dtype=torch.float64)
    x = torch.rand(50)
    out = propagate(graph.csr(), x, weight, reduce=reduce, backend=backend)
    assert out.dtype == torch.float32
    ref = propagate(graph.csr(), x.double(), weight, reduce=reduce, backend=backend)
    torch.testing.assert_close(out, ref.float())
