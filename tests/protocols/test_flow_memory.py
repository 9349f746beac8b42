"""The fused straight-through flow: the values and gradients of ``bernoulli_st(...) * source``,
bit for bit, with the draw saved as a bool mask."""

from __future__ import annotations

import pytest
import torch

from lpm_graph.layers.samplers import bernoulli_st
from lpm_graph.protocols.base import _straight_through_flow

CASES = {
    # name: (survival shape, source shape)
    "per agent": ((40,), (40,)),
    "scalar": ((), (40,)),
    "per stage": ((1, 3, 1), (40, 3, 2)),
    "per agent, replicates": ((40, 1), (40, 4)),
}


def _inputs(q_shape, s_shape, dtype, gen):
    q = torch.rand(q_shape, generator=gen, dtype=dtype)
    # a state of 0/1 indicators and a few fractions (what flows see in both modes)
    source = (torch.rand(s_shape, generator=gen, dtype=dtype) < 0.6).to(dtype)
    source[:3] = torch.rand(source[:3].shape, generator=gen, dtype=dtype)
    u = torch.rand(s_shape, generator=gen, dtype=dtype)
    return q, source, u


def _reference(q, s, u):
    return bernoulli_st(survival=q, uniform=u) * s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_fused_flow_equals_bernoulli_st_times_source(dtype, case, needs):
    gen = torch.Generator().manual_seed(0)
    q0, s0, u = _inputs(*CASES[case], dtype, gen)
    weight = torch.randn(torch.broadcast_shapes(q0.shape, s0.shape), generator=gen, dtype=dtype)

    def run(fused):
        q = q0.clone().requires_grad_(needs[0])
        s = s0.clone().requires_grad_(needs[1])
        flow = _straight_through_flow if fused else _reference
        out = flow(q, s, u)
        (out * weight).sum().backward()
        return out.detach(), q.grad, s.grad

    new, old = run(True), run(False)
    assert new[0].dtype == old[0].dtype and new[0].shape == old[0].shape
    assert 0 < int((new[0] != 0).sum()) < new[0].numel()  # some moved, some did not
    for a, b in zip(new, old):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)


def test_fused_flow_without_gradients_is_the_draw():
    gen = torch.Generator().manual_seed(1)
    q, s, u = _inputs((40,), (40,), torch.float32, gen)
    with torch.no_grad():
        out = _straight_through_flow(q.requires_grad_(), s, u)
    assert not out.requires_grad
    assert torch.equal(out, (u >= q).float() * s)


def test_fused_flow_keeps_a_bool_mask_not_a_float_draw():
    gen = torch.Generator().manual_seed(2)
    q, s, u = _inputs((40,), (40,), torch.float32, gen)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _straight_through_flow(q.requires_grad_(), s.requires_grad_(), u)
    assert sorted(str(t.dtype) for t in saved) == ["torch.bool", "torch.float32"]
    assert any(t is s for t in saved)  # the source itself, no copy
