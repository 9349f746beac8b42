"""ReuseBuffers: outputs placed in freed blocks, never in one still in use; runs bit for bit
the same with and without it."""

from __future__ import annotations

import pytest
import torch

import lpm_graph.simulator as sim_module
from lpm_graph import simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.ops import ReuseBuffers, reuse
from lpm_graph.protocols import SEIRM, SIR

aten = torch.ops.aten
SMALL = 1024  # bytes: blocks for anything of 256 float32 values or more


@pytest.fixture
def small_blocks(monkeypatch):
    """The runs below hold 2,000 agents: make their states count as large."""
    monkeypatch.setattr(reuse, "MIN_BYTES", SMALL)


def _graph(n: int = 2000, ages: bool = False):
    graph = erdos_renyi(n, 8, seed=0)
    if ages:
        age = torch.randint(0, 8, (n,), generator=torch.Generator().manual_seed(1))
        graph.set_node_attrs("agent", age_group=age)
    return graph


def _run(model_name: str, *, grad: bool, checkpoint: int | None, reuse_memory: bool):
    """Counts, flows and (with grad) the parameters' gradients of a seeded run."""
    graph = _graph(ages=model_name == "seirm")
    model = SIR(0.08, 0.1) if model_name == "sir" else SEIRM(2.5, 0.05)
    last = "R" if model_name == "sir" else "M"
    kwargs = dict(initial_infected=20, seed=3, reuse_memory=reuse_memory)
    with torch.set_grad_enabled(grad):
        traj = simulate(model, graph, 25, checkpoint=checkpoint, **kwargs)
    values = [x.detach() for x in (*traj.counts.values(), *traj.flows.values())]
    if grad:
        (traj.flows["infections"].sum() + traj.counts[last][-1]).backward()
        values += [p.grad for p in model.parameters() if p.grad is not None]
    return values


def _spy_modes(monkeypatch) -> list[ReuseBuffers | None]:
    """The modes the simulator makes, kept for inspection."""
    seen: list[ReuseBuffers | None] = []
    original = reuse.for_run

    def keep(state, enabled=True):
        seen.append(original(state, enabled))
        return seen[-1]

    monkeypatch.setattr(sim_module, "for_run", keep)
    return seen


@pytest.mark.parametrize("model_name", ["sir", "seirm"])
@pytest.mark.parametrize(
    "grad, checkpoint", [(False, None), (True, None), (True, 5)], ids=["fwd", "fb", "fb_ckpt"]
)
def test_runs_are_bit_identical_with_and_without_reuse(
    small_blocks, monkeypatch, model_name, grad, checkpoint
):
    seen = _spy_modes(monkeypatch)
    with_reuse = _run(model_name, grad=grad, checkpoint=checkpoint, reuse_memory=True)
    (mode,) = seen
    assert mode is not None and mode.reused > 0
    plain = _run(model_name, grad=grad, checkpoint=checkpoint, reuse_memory=False)
    assert seen[1] is None
    assert len(plain) == len(with_reuse)
    for x, y in zip(plain, with_reuse):
        assert torch.equal(x, y)


def test_backward_reuses_blocks_and_releases_them(small_blocks, monkeypatch):
    seen = _spy_modes(monkeypatch)
    traj = simulate(SEIRM(2.5, 0.05), _graph(ages=True), 12, initial_infected=20, checkpoint=4)
    (mode,) = seen
    forward_reused = mode.reused
    assert mode.held_bytes > 0  # kept for the backward
    traj.counts["M"][-1].backward()
    assert mode.reused > forward_reused  # the backward (and its recomputation) reused blocks
    assert mode.held_bytes == 0  # released when the backward ended


def test_no_grad_run_releases_its_blocks(small_blocks, monkeypatch):
    seen = _spy_modes(monkeypatch)
    with torch.no_grad():
        simulate(SIR(0.08, 0.1), _graph(), 10, initial_infected=20, seed=0)
    assert seen[0] is not None and seen[0].reused > 0 and seen[0].held_bytes == 0


def test_off_below_the_threshold_and_when_asked():
    small = {"S": torch.zeros(1000)}
    assert reuse.for_run(small) is None  # 4 KB: glibc's heap reuses it
    big = {"S": torch.empty(reuse.MIN_BYTES // 4)}
    assert isinstance(reuse.for_run(big), ReuseBuffers)
    assert reuse.for_run(big, enabled=False) is None
    with pytest.raises(ValueError, match="reuse_memory must be True or False"):
        simulate(SIR(0.1, 0.1), _graph(200), 2, initial_infected=1, reuse_memory="yes")


def test_a_block_in_use_is_never_handed_out():
    x = torch.rand(4096)
    with ReuseBuffers(min_bytes=SMALL) as mode:
        a = x * 2  # a block
        b = x + 1  # a second: a is alive
        assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
        view = a[10:]  # a view keeps a's block in use
        ptr = a.untyped_storage().data_ptr()
        del a
        c = x - 1
        assert c.untyped_storage().data_ptr() != ptr
        del view
        d = x / 3  # now a's block is free
        assert d.untyped_storage().data_ptr() == ptr
        assert torch.equal(d, x / 3) and torch.equal(c, x - 1) and torch.equal(b, x + 1)
    assert mode.reused >= 1 and mode.held_bytes == 0  # released at exit


def test_a_tensor_saved_for_backward_keeps_its_block():
    x = torch.rand(4096, requires_grad=True)
    with ReuseBuffers(min_bytes=SMALL):
        y = torch.exp(x)  # exp saves its result for backward
        ptr = y.untyped_storage().data_ptr()
        z = y.sum()
        del y
        w = torch.rand(4096) * 5  # must not land in exp's saved result
        assert w.untyped_storage().data_ptr() != ptr
        z.backward()
    assert torch.equal(x.grad, torch.exp(x.detach()))


CASES = {
    "add": lambda x, y, m: x + y,
    "sub": lambda x, y, m: x - y,
    "mul": lambda x, y, m: x * y,
    "div": lambda x, y, m: x / y,
    "rsub_scalar": lambda x, y, m: 1 - x,
    "rsub_tensor": lambda x, y, m: torch.rsub(x, y, alpha=2),
    "neg_exp": lambda x, y, m: torch.exp(-x),
    "expm1_log_log1p": lambda x, y, m: torch.expm1(x) + torch.log(y) + torch.log1p(x),
    "sigmoid_clamp": lambda x, y, m: torch.sigmoid(x).clamp_min(0.3).clamp(0.4, 0.6),
    "max_min_pow": lambda x, y, m: torch.maximum(x, y) - torch.minimum(x, y) ** 2,
    "where": lambda x, y, m: torch.where(x > y, x, 0),
    "compare": lambda x, y, m: (x >= y) | (x < 0.2) & ~(y == 0.5),
    "abs_signbit": lambda x, y, m: (-x).abs() + torch.signbit(x - y),
    "cat_strided": lambda x, y, m: torch.cat([x.unsqueeze(1), m[:, :-1]], 1),
    "mv": lambda x, y, m: m @ torch.tensor([0.1, 0.2, 0.3, 0.4]),
    "sum_dim": lambda x, y, m: (m * 2).sum(1),
    "index_select": lambda x, y, m: x.index_select(0, torch.arange(0, x.numel(), 2)),
    "clone_to": lambda x, y, m: m[:, 2].contiguous() + m.clone()[:, 0] + (x > y).to(x.dtype),
    "factories": lambda x, y, m: torch.zeros_like(x) + torch.zeros(x.shape) + x.new_zeros(x.shape),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_placed_op_equals_torch(name):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(5000, generator=gen), torch.rand(5000, generator=gen)
    m = torch.rand(5000, 4, generator=gen)
    expected = CASES[name](x, y, m)
    for _ in range(3):  # the later rounds land in freed blocks
        with ReuseBuffers(min_bytes=SMALL):
            got = CASES[name](x, y, m)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got, expected)


def test_view_backward_and_sparse_mv_equal_torch():
    x = torch.rand(3000, 5, requires_grad=True)
    rows = torch.arange(3001) * 2
    cols, values = torch.arange(6000) % 3000, torch.rand(6000)
    a = torch.sparse_csr_tensor(rows, cols, values, (3000, 3000), check_invariants=True)
    v = torch.rand(3000)

    def f(x):
        return ((x[:, -1] * 3).sum() + (x[:, :-1] ** 2).sum(), a @ v)

    (s0, p0) = f(x)
    s0.backward()
    g0, x.grad = x.grad.clone(), None
    with ReuseBuffers(min_bytes=SMALL) as mode:
        (s1, p1) = f(x)
        s1.backward()
    assert torch.equal(x.grad, g0) and torch.equal(p1, p0) and torch.equal(s1, s0)
    assert mode.allocated > 0


def test_other_devices_and_layouts_pass_through():
    x = torch.rand(4096)
    with ReuseBuffers(min_bytes=SMALL) as mode:
        y = x.to(torch.float64)  # a dtype change: a copy into a block
        z = torch.empty(4096, device="meta") + 1  # not the CPU: left alone
    assert y.dtype == torch.float64 and torch.equal(y, x.double())
    assert z.device.type == "meta" and mode.allocated == 1


def test_factories_keep_their_device_and_dtype():
    meta = torch.empty(4096, dtype=torch.float64, device="meta")
    with ReuseBuffers(min_bytes=SMALL) as mode:
        z = meta.new_zeros(4096)  # the tensor's device and dtype, not the CPU's default
        w = torch.empty(4096, dtype=torch.float64).new_zeros(4096)  # CPU blocks, w zeroed
    assert z.device.type == "meta" and z.dtype == torch.float64
    assert w.dtype == torch.float64 and not w.any() and mode.allocated == 2  # empty, new_zeros


def test_a_rate_from_upstream_of_two_runs(small_blocks):
    """A rate computed by a graph upstream of two runs: both backwards go through it, with
    the same gradient as without reuse."""
    graph = _graph()

    def two_runs(reuse_memory: bool):
        log_rate = torch.tensor(-2.5, requires_grad=True)
        rate = log_rate.exp()
        total = 0
        for seed in (0, 1):
            sir = SIR(rate, 0.1)
            traj = simulate(
                sir, graph, 10, initial_infected=20, seed=seed, reuse_memory=reuse_memory
            )
            total = total + traj.counts["R"][-1]
        total.backward()
        return log_rate.grad

    assert torch.equal(two_runs(True), two_runs(False))


def test_a_node_is_hooked_by_one_mode_only():
    x = torch.rand(4096, requires_grad=True)
    y = (torch.exp(x) * 3).sum()
    first = ReuseBuffers(min_bytes=SMALL, keep=True)
    second = ReuseBuffers(min_bytes=SMALL, keep=True)
    assert reuse.reuse_in_backward(first, [y], [x]) > 0
    reuse.reuse_in_backward(second, [y], [x])  # the nodes keep the first mode's hooks
    y.backward()
    assert first.allocated > 0 and second.allocated == 0
    assert first.held_bytes == 0  # released at the end of the backward
    assert torch.equal(x.grad, torch.exp(x.detach()) * 3)
