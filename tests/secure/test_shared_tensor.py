"""Fixed-point ring arithmetic on shares: exact where linear, within one unit where truncated,
exact comparisons, a secure exp, and refusals of what would compute on shares silently."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph.secure import Session, decode, encode, exp_neg
from lpm_graph.secure.dealer import Correlation, Dealer
from lpm_graph.secure.ring import logical_shift_right, random_ring
from lpm_graph.secure.tensor import decode_shares, multiply, truncate

ULP = 2.0**-16


def ring_sum(x):
    return x.shares.sum(0)


@pytest.fixture(params=[2, 3, 5], ids=lambda k: f"K={k}")
def session(request):
    return Session(request.param, seed=11)


def test_encoding_round_trips_and_rejects_bad_values():
    x = torch.tensor([0.0, 1.5, -2.25, 1e6, -1e-5])
    assert torch.equal(decode(encode(x)), torch.round(x.double() * 2**16) / 2**16)
    assert torch.equal(encode(torch.tensor([1, 0, -3])), torch.tensor([1, 0, -3]) << 16)
    with pytest.raises(ValueError, match="NaN"):
        encode(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="does not fit"):
        encode(torch.tensor([2.0**50]))


def test_ring_wraps_around_modulo_2_64():
    big = torch.tensor([2**62], dtype=torch.int64)
    assert int((big * 4)[0]) == 0  # 2**64 = 0 in the ring
    assert int(logical_shift_right(torch.tensor([-1]), 60)[0]) == 15
    r = random_ring((100_000,))  # a keystream under a fresh key from OS entropy
    assert bool((r < 0).any()) and bool((r > 2**62).any())  # both halves of the ring
    with pytest.raises(TypeError, match="KeyStream"):
        random_ring((4,), torch.Generator().manual_seed(0))  # predictable: refused


def test_linear_operations_are_bit_exact_against_int64_plaintext(session):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, generator=g, dtype=torch.float64) * 50
    y = torch.randn(500, generator=g, dtype=torch.float64) * 50
    w = torch.rand(500, generator=g, dtype=torch.float64)
    bits = (torch.rand(500, generator=g) < 0.3).long()
    X, Y, B = session.share(x), session.share(y), session.share(bits)
    ex, ey, ew = encode(x), encode(y), encode(w)
    assert torch.equal(ring_sum(X + Y), ex + ey)
    assert torch.equal(ring_sum(X - Y), ex - ey)
    assert torch.equal(ring_sum(X * w), ex * ew)  # public times private: scale 32, no rounding
    assert (X * w).frac_bits == 32
    assert torch.equal(ring_sum(B * w), bits * ew)  # an indicator times a rate: scale 16
    assert torch.equal(ring_sum(X + 2.5), ex + encode(torch.tensor(2.5)))
    assert torch.equal(ring_sum(B + 0.5), (bits << 16) + encode(torch.tensor(0.5)))
    index = torch.randint(0, 40, (500,), generator=g)
    agg = X.scatter_sum(index, 40)
    assert torch.equal(ring_sum(agg), torch.zeros(40, dtype=torch.int64).index_add_(0, index, ex))
    assert torch.equal(ring_sum(X.sum()), ex.sum())
    assert session.cost.rounds == 0  # none of this communicates


def test_beaver_products_and_truncation_are_within_one_unit(session):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, generator=g, dtype=torch.float64) * 30
    y = torch.randn(2000, generator=g, dtype=torch.float64) * 30
    X, Y = session.share(x), session.share(y)
    xe, ye = decode(encode(x)), decode(encode(y))
    product = multiply(X, Y)
    assert product.frac_bits == 16
    error = (decode_shares(product) - xe * ye).abs()
    assert float(error.max()) <= ULP + 1e-12  # floor or floor + 1 of the exact product
    # bits times values: scale 0 x scale 16 needs no truncation and is exact
    b = (torch.rand(2000, generator=g) < 0.5).long()
    assert torch.equal(ring_sum(multiply(session.share(b), X)), b * encode(x))
    t = truncate(X * 0.25, 16)  # 32 -> 16 bits
    assert (
        float((decode_shares(t) - decode(encode(x) * encode(torch.tensor(0.25)), 32)).abs().max())
        <= ULP
    )


def test_comparisons_are_exact_on_fixed_point_values(session):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3000, generator=g, dtype=torch.float64) * 100
    y = x.clone()
    y[:1000] += ULP  # one unit above
    y[1000:2000] -= ULP  # one unit below
    y[2000:] = torch.randn(1000, generator=g, dtype=torch.float64) * 100
    X, Y = session.share(x), session.share(y)
    got = decode_shares(X > Y)
    assert torch.equal(got, (encode(x) > encode(y)).double())
    assert torch.equal(decode_shares(X < Y), (encode(x) < encode(y)).double())
    assert torch.equal(decode_shares(X > 0.5), (encode(x) > encode(torch.tensor(0.5))).double())
    extremes = torch.tensor([2.0**40, -(2.0**40), 0.0, ULP, -ULP], dtype=torch.float64)
    assert torch.equal(decode_shares(session.share(extremes) > 0.0), (extremes > 0).double())


def test_comparison_cost_is_logarithmic_in_the_word_size():
    session = Session(2, seed=0)
    x = session.share(torch.rand(1000, dtype=torch.float64))
    before = session.cost.rounds
    x > 0.5  # noqa: B015
    assert session.cost.rounds - before == 8  # 1 generate + 6 prefix levels + 1 bit conversion


def test_exp_neg_matches_float64(session):
    lam = torch.linspace(0, 12, 1001, dtype=torch.float64)
    got = decode_shares(exp_neg(session.share(lam)))
    want = torch.exp(-decode(encode(lam)))
    assert float(((got - want) / want)[lam <= 5].abs().max()) < 1e-4
    assert float((got - want).abs().max()) < 1e-5  # about 2^(k + 1 - work_bits)


def test_a_correlation_is_used_once():
    item = Correlation("triple", {"a": torch.zeros(1, 2, dtype=torch.int64)})
    item.use()
    with pytest.raises(RuntimeError, match="already used"):
        item.use()


def test_dealer_triples_are_consistent():
    dealer = Dealer(3, seed=0)
    t = dealer.triple((1000,))
    a, b, c = (t[k].sum(0) for k in "abc")
    assert torch.equal(a * b, c)
    bt = dealer.binary_triple((1000,))
    xa, xb, xc = (bt[k][0] ^ bt[k][1] ^ bt[k][2] for k in "abc")
    assert torch.equal(xa & xb, xc)
    tr = dealer.truncation((1000,), 16)
    r = tr["r"].sum(0)
    assert torch.equal(tr["shifted"].sum(0), logical_shift_right(r, 16))
    assert torch.equal(tr["msb"].sum(0), logical_shift_right(r, 63))
    bit = dealer.bit((1000,))
    assert torch.equal(
        bit["binary"][0] ^ bit["binary"][1] ^ bit["binary"][2], bit["arithmetic"].sum(0)
    )


def test_same_seed_same_shares_and_audit_of_openings():
    a, b = Session(2, seed=4), Session(2, seed=4)
    x = torch.rand(100, dtype=torch.float64)
    assert torch.equal(a.share(x).shares, b.share(x).shares)
    value = a.share(x).sum().reveal("total", "aggregate", group=100)
    assert math.isclose(float(value), float(decode(encode(x)).sum()), abs_tol=1e-12)
    assert [o.kind for o in a.audit.openings] == ["aggregate"]
    with pytest.raises(ValueError, match="unknown opening kind"):
        a.share(x).reveal("x", "secret")


def test_shared_tensors_refuse_what_would_compute_on_shares():
    session = Session(2)
    x = session.share(torch.rand(10, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.sigmoid does not work on SharedTensor"):
        torch.sigmoid(x)
    with pytest.raises(TypeError, match="no plaintext truth value"):
        bool(x > 0.5)
    with pytest.raises(ValueError, match="at least 2 parties"):
        Session(1)
    with pytest.raises(ValueError, match="overflow"):
        x.mul_public(0.5, frac_bits=50)  # 16 + 50 bits: no truncation of x can help


def test_a_chain_of_public_factors_rescales_instead_of_overflowing():
    """rate * x * (1 - c_j) * (1 - c_i): four 16-bit factors would need 64 fractional bits;
    the shared factor is truncated back once, and the value stays within fixed-point error."""
    from lpm_graph.secure import Session
    from lpm_graph.secure.tensor import decode_shares

    session = Session(2, seed=0)
    x = torch.tensor([0.5, 1.0, 0.0, 2.0], dtype=torch.float64)
    c = torch.tensor([0.1, 0.5, 0.9, 0.3], dtype=torch.float64, requires_grad=True)
    shared = session.share(x)  # 16 bits
    out = shared.mul_public(0.3).mul_public(1 - c).mul_public(1 - c)
    want = (x * 0.3 * (1 - c) * (1 - c)).detach()
    assert out.frac_bits <= 52 and session.cost.rounds == 1  # one truncation
    assert torch.allclose(decode_shares(out), want, atol=1e-4)
