"""Straight-through samplers (exact draws, documented gradients) and seeded random streams."""

from __future__ import annotations

import math
import os

import pytest
import torch

from lpm_graph.layers import RandomStreams, bernoulli_st, categorical_st

DRAWS = 200_000


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def is_binary(draws: torch.Tensor) -> bool:
    return bool(((draws == 0) | (draws == 1)).all())


# ---------------------------------------------------------------------------- bernoulli_st


@pytest.mark.parametrize("p", [0.02, 0.3, 0.5, 0.9])
def test_bernoulli_draws_are_exact_zeros_and_ones_with_mean_p(p):
    probs = torch.full((DRAWS,), p, dtype=torch.float64)
    draws = bernoulli_st(probs, generator=generator(1))
    assert draws.dtype == torch.float64 and draws.shape == (DRAWS,)
    assert is_binary(draws)
    sd = math.sqrt(p * (1 - p) / DRAWS)
    assert abs(draws.mean().item() - p) < 5 * sd


def test_bernoulli_extreme_probabilities():
    draws = bernoulli_st(torch.tensor([0.0, 1.0] * 1000), generator=generator(2))
    assert draws.tolist() == [0.0, 1.0] * 1000


def test_bernoulli_straight_through_gradient_is_one_per_element():
    probs = torch.rand(1000, generator=generator(3)).requires_grad_()
    draws = bernoulli_st(probs, generator=generator(4))
    assert is_binary(draws)  # the gradient path does not change values
    draws.sum().backward()
    assert torch.equal(probs.grad, torch.ones(1000))


def test_bernoulli_gradient_flows_through_a_downstream_computation():
    probs = torch.tensor([0.2, 0.7], requires_grad=True)
    weights = torch.tensor([3.0, -2.0])
    (bernoulli_st(probs, generator=generator(5)) * weights).sum().backward()
    assert probs.grad.tolist() == [3.0, -2.0]


def test_bernoulli_without_grad_is_a_plain_tensor():
    draws = bernoulli_st(torch.full((10,), 0.5), generator=generator(6))
    assert not draws.requires_grad


def test_bernoulli_with_common_random_numbers():
    # On an even grid of u, exactly a fraction p of the draws is 1, and raising p only turns
    # zeros into ones (the coupling that makes finite differences under common numbers work).
    uniform = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    previous = torch.zeros(1000, dtype=torch.float64)
    for p in (0.0, 0.1, 0.3, 0.75, 1.0):
        draws = bernoulli_st(torch.full((1000,), p, dtype=torch.float64), uniform=uniform)
        assert draws.sum().item() == round(1000 * p), p
        assert bool((draws >= previous).all()), p
        previous = draws


def test_bernoulli_is_reproducible_from_the_generator():
    probs = torch.full((100,), 0.5)
    first = bernoulli_st(probs, generator=generator(7))
    assert torch.equal(first, bernoulli_st(probs, generator=generator(7)))
    assert not torch.equal(first, bernoulli_st(probs, generator=generator(8)))


# ---------------------------------------------------------------------------- categorical_st

LOGITS = torch.tensor([0.5, -1.0, 1.5, 0.0])


def test_categorical_draws_are_one_hot_with_softmax_frequencies():
    logits = LOGITS.expand(DRAWS, 4)
    draws = categorical_st(logits, generator=generator(10))
    assert draws.shape == (DRAWS, 4)
    assert is_binary(draws)
    one_per_row = torch.equal(draws.sum(-1), torch.ones(DRAWS))  # (keeps failure output short)
    assert one_per_row
    probs = torch.softmax(LOGITS.double(), 0)
    freq = draws.double().mean(0)
    sd = (probs * (1 - probs) / DRAWS).sqrt()
    assert bool(((freq - probs).abs() < 5 * sd).all()), (freq, probs)


def test_categorical_along_another_dim():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0], [-10.0, -10.0]])  # categories on dim 0
    draws = categorical_st(logits, dim=0, generator=generator(11))
    assert torch.equal(draws.sum(0), torch.ones(2))
    assert draws[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert draws[:, 1].tolist() == [0.0, 1.0, 0.0]


def test_categorical_gradient_is_finite_and_nonzero():
    logits = LOGITS.clone().requires_grad_()
    draws = categorical_st(logits.expand(64, 4), tau=0.5, generator=generator(12))
    (draws * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert bool(torch.isfinite(logits.grad).all())
    assert logits.grad.abs().sum() > 0
    # the softmax rows sum to one, so the gradient of the plain sum vanishes
    logits.grad = None
    categorical_st(logits.expand(64, 4), generator=generator(12)).sum().backward()
    torch.testing.assert_close(logits.grad, torch.zeros(4), atol=1e-5, rtol=0)


def test_categorical_soft_samples_are_the_relaxation():
    draws = categorical_st(LOGITS.expand(100, 4), hard=False, tau=2.0, generator=generator(13))
    torch.testing.assert_close(draws.sum(-1), torch.ones(100))
    assert bool(((draws > 0) & (draws < 1)).all())


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_categorical_rejects_a_non_positive_temperature(tau):
    with pytest.raises(ValueError, match=r"tau must be a positive temperature"):
        categorical_st(LOGITS, tau=tau)


# ---------------------------------------------------------------------------- RandomStreams


def test_same_seed_name_and_step_give_identical_draws():
    a = RandomStreams(42).uniform("infection", 3, (1000,), torch.float32)
    b = RandomStreams(42).uniform("infection", 3, (1000,), torch.float32)
    assert torch.equal(a, b)
    assert bool(((a >= 0) & (a < 1)).all())


@pytest.mark.parametrize(
    ("seed", "name", "step"),
    [(42, "recovery", 3), (42, "infection", 4), (43, "infection", 3)],
    ids=["other-name", "other-step", "other-seed"],
)
def test_any_other_key_gives_different_draws(seed, name, step):
    base = RandomStreams(42).uniform("infection", 3, (1000,), torch.float32)
    other = RandomStreams(seed).uniform(name, step, (1000,), torch.float32)
    assert not torch.equal(base, other)


def test_draws_do_not_depend_on_call_order():
    first = RandomStreams(7)
    a1 = first.uniform("a", 0, (50,), torch.float64)
    b1 = first.uniform("b", 1, (50,), torch.float64)
    second = RandomStreams(7)
    b2 = second.uniform("b", 1, (50,), torch.float64)
    second.uniform("c", 5, (10,), torch.float64)  # an extra layer in between
    a2 = second.uniform("a", 0, (50,), torch.float64)
    assert torch.equal(a1, a2)
    assert torch.equal(b1, b2)


def test_key_is_a_stable_function_of_seed_name_and_step():
    streams = RandomStreams(0)
    key = streams.key("infection", 12)
    assert isinstance(key, int) and 0 <= key < 2**63
    streams.generator("other", 1)
    assert streams.key("infection", 12) == key
    assert RandomStreams(0).key("infection", 12) == key
    # the separator keeps name and step apart: ("a", 12) is not ("a1", 2)
    assert streams.key("a", 12) != streams.key("a1", 2)
    assert RandomStreams(1).key("2", 3) != RandomStreams(12).key("", 3)


def test_generator_feeds_the_samplers_reproducibly():
    streams = RandomStreams(5)
    probs = torch.full((200,), 0.5)
    first = bernoulli_st(probs, generator=streams.generator("infection", 2))
    again = bernoulli_st(probs, generator=streams.generator("infection", 2))
    later = bernoulli_st(probs, generator=streams.generator("infection", 3))
    assert torch.equal(first, again)
    assert not torch.equal(first, later)


@pytest.mark.parametrize("seed", [1.5, True, "1", None])
def test_seed_must_be_an_int(seed):
    with pytest.raises(ValueError, match=r"seed must be an int or a sequence of ints.*, got"):
        RandomStreams(seed)


def test_long_cpu_draws_are_chunked_the_same_for_any_thread_count():
    from lpm_graph.layers.samplers import CHUNK

    streams = RandomStreams(11)
    n = 3 * CHUNK + 1234  # four chunks, the last one short
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = streams.uniform("infection", 4, (n,), torch.float32)
        torch.set_num_threads(1)
        one = streams.uniform("infection", 4, (n,), torch.float32)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    # the first chunk is the stream's own generator: draws up to CHUNK numbers are unchanged
    own = torch.Generator().manual_seed(streams.key("infection", 4))
    assert torch.equal(two[:CHUNK], torch.rand(CHUNK, generator=own))
    for k in range(1, 4):  # every other chunk from its own key
        gen = torch.Generator().manual_seed(streams.key("infection", 4, chunk=k))
        part = two[k * CHUNK : (k + 1) * CHUNK]
        assert torch.equal(part, torch.rand(part.numel(), generator=gen))
        assert not torch.equal(part[:100], two[:100])
    # U[0, 1): mean 1/2 and variance 1/12 within 5 standard errors over 800k numbers
    assert two.min() >= 0 and two.max() < 1
    assert abs(two.double().mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(two.double().var().item() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)


def test_long_draws_keep_shapes_and_ensemble_columns():
    from lpm_graph.layers.samplers import CHUNK

    shape = (CHUNK // 2 + 7, 3)  # a replicate draw of more than CHUNK numbers in all
    single = RandomStreams(5).uniform("recovery", 2, shape, torch.float64)
    assert single.shape == shape and single.dtype == torch.float64
    ensemble = RandomStreams([5, 6]).uniform("recovery", 2, (2 * CHUNK, 2), torch.float32)
    for i, seed in enumerate((5, 6)):
        alone = RandomStreams(seed).uniform("recovery", 2, (2 * CHUNK,), torch.float32)
        assert torch.equal(ensemble[:, i], alone)


def test_draws_ahead_are_the_numbers_a_draw_gives(two_threads):
    from lpm_graph.layers.samplers import CHUNK

    n, f32 = 3 * CHUNK + 5, torch.float32
    streams = RandomStreams(3)
    streams.uniform("sir", 4, (n,), f32)
    streams.uniform("short", 4, (10,), f32)  # one generator's draw: nothing to gain
    streams.uniform("attribute", 0, (n,), f32)  # a fixed step is not the step's draw
    streams.draw_ahead(4, 5)
    assert list(streams._ahead) == [("sir", 5, (n,), f32)]
    ahead = streams.uniform("sir", 5, (n,), f32)
    assert not streams._ahead
    assert torch.equal(ahead, RandomStreams(3).uniform("sir", 5, (n,), f32))
    # a draw ahead nobody asks for is dropped; the next draw is drawn as usual
    streams.uniform("sir", 5, (n,), f32)
    streams.draw_ahead(5, 6)
    streams.forget_ahead()
    assert not streams._ahead
    assert torch.equal(
        streams.uniform("sir", 6, (n,), f32), RandomStreams(3).uniform("sir", 6, (n,), f32)
    )
    torch.set_num_threads(1)  # no second core: nothing is drawn ahead
    streams.uniform("sir", 6, (n,), f32)
    streams.draw_ahead(6, 7)
    assert not streams._ahead


def test_ensembles_draw_nothing_ahead():
    from lpm_graph.layers.samplers import CHUNK

    streams = RandomStreams([1, 2])
    streams.uniform("sir", 0, (2 * CHUNK, 2), torch.float32)
    streams.draw_ahead(0, 1)
    assert not streams._ahead


def test_draw_ahead_skips_step_zero_and_forgets_failed_fills(monkeypatch, two_threads):
    from lpm_graph.layers.samplers import CHUNK

    n, f32 = 2 * CHUNK, torch.float32
    streams = RandomStreams(3)
    streams.uniform("attribute", 0, (n,), f32)  # at step 0, a fixed-step draw looks alike
    streams.draw_ahead(0, 1)
    assert not streams._ahead
    streams.uniform("sir", 1, (n,), f32)
    monkeypatch.setattr(streams, "_generator", lambda key: 1 / 0)  # every fill fails
    streams.draw_ahead(1, 2)
    assert streams._ahead
    streams.forget_ahead()  # a failed fill nobody asked for is dropped, not raised
    assert not streams._ahead


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_draws_in_chunks():
    # the child inherits the parent's fill pool but not its threads
    import subprocess
    import sys

    script = """
import os, torch
from lpm_graph.layers import RandomStreams
from lpm_graph.layers.samplers import CHUNK
torch.set_num_threads(2)
first = RandomStreams(1).uniform("sir", 0, (4 * CHUNK,), torch.float32)
pid = os.fork()
if pid == 0:
    again = RandomStreams(1).uniform("sir", 0, (4 * CHUNK,), torch.float32)
    os._exit(0 if torch.equal(first, again) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.stdout.strip() == "0", out.stdout + out.stderr
