"""Statistical checks of what the parties of a secure computation see.

A party sees its own shares and the opened values of the audit log. Shares and masks must be
uniformly random ring elements whatever the secret, and nothing private may ever be opened.
Every uniformity check tests, on the words read as unsigned 64-bit integers:

* the top byte (bits 56-63) against 256 equiprobable bins (chi-square);
* the low 16 bits (bits 0-15) against 65536 equiprobable bins (chi-square);
* the 64 single-bit frequencies together (sum of the 64 squared z-scores, chi-square, 64 df);

and every independence check asks that the Pearson correlation of a feature of the words (the
word as a signed float, its low 16 bits) with the secret be within ``Z_MAX / sqrt(n)``. Bits
that should be Bernoulli(1/2) get a binomial test.

The file makes about 350 such checks, so each one runs at level ``ALPHA = 1e-4`` (chi-square and
binomial p > 1e-4, ``|corr| sqrt(n) < 3.89``): at 1e-3 and three standard errors about one run
in four would fail by chance somewhere. The failures these checks target (an unmasked or partly
masked value, a reused mask, a mask with missing bits) land far outside these bounds: p-values
near 0 and correlations of hundreds of standard errors. Seeds are fixed, so every check is
deterministic.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor

from lpm_graph import simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.protocols import SIR
from lpm_graph.secure import AuditLog, ProtocolInputs, Session, encode, greater, secure_simulate
from lpm_graph.secure.tensor import decode_shares, multiply


def sir_inputs(n, initial_infected, **kwargs):
    """The private inputs of an SIR run (its initial state and draws)."""
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, **kwargs)


ALPHA = 1e-4
Z_MAX = float(stats.norm.isf(ALPHA / 2))  # 3.89
_BIT_OF_BYTE = (np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1  # [256, 8]


# ---------------------------------------------------------------------- statistics
def uniformity_pvalues(words: Tensor) -> dict[str, float]:
    """p-values of the top byte, the low 16 bits and the 64 bit frequencies of ``words``."""
    w = words.reshape(-1).contiguous().numpy()
    n = w.size
    as_bytes = w.view(np.uint8).reshape(n, 8)  # little-endian: column 7 is the top byte
    hists = [np.bincount(as_bytes[:, j], minlength=256) for j in range(8)]
    low16 = np.bincount(w.view(np.uint16).reshape(n, 4)[:, 0], minlength=1 << 16)
    ones = np.concatenate([h @ _BIT_OF_BYTE for h in hists])  # [64]
    z = (ones - n / 2) / math.sqrt(n / 4)
    return {
        "top byte": float(stats.chisquare(hists[7]).pvalue),
        "low 16 bits": float(stats.chisquare(low16).pvalue),
        "64 bit frequencies": float(stats.chi2.sf(float((z**2).sum()), df=64)),
    }


def correlations(words: Tensor, secret: Tensor) -> dict[str, float]:
    """Pearson correlations of ``words`` (as a signed float, and its low 16 bits) with
    ``secret``, times ``sqrt(n)`` (about N(0, 1) when independent)."""
    w = words.reshape(-1)
    s = secret.reshape(-1).to(torch.float64).numpy()
    root_n = math.sqrt(w.numel())
    features = {"value": w.to(torch.float64), "low 16 bits": (w & 0xFFFF).to(torch.float64)}
    return {k: float(np.corrcoef(f.numpy(), s)[0, 1]) * root_n for k, f in features.items()}


def assert_uniform(words: Tensor, what: str) -> None:
    assert words.numel() >= 100_000, f"{what}: too few samples ({words.numel()}) for the tests"
    for test, p in uniformity_pvalues(words).items():
        assert p > ALPHA, f"{what}: {test} not uniform (chi-square p = {p:.2e})"


def assert_uncorrelated(words: Tensor, secret: Tensor, what: str) -> None:
    assert secret.to(torch.float64).std() > 0, f"{what}: a constant secret has no correlation"
    for feature, z in correlations(words, secret).items():
        corr = z / math.sqrt(words.numel())
        assert abs(z) < Z_MAX, (
            f"{what}: {feature} correlated with the secret (corr = {corr:.2e}, {z:.1f} se)"
        )


def assert_fair_bits(bits: Tensor, what: str) -> None:
    ones, n = int(bits.to(torch.int64).sum()), bits.numel()
    p = stats.binomtest(ones, n, 0.5).pvalue
    assert p > ALPHA, f"{what}: {ones} ones in {n} bits is not Bernoulli(1/2) (p = {p:.2e})"


def opened(audit: AuditLog, kind: str) -> list[Tensor]:
    return [v for o, v in zip(audit.openings, audit.values) if o.kind == kind]


def pooled(audit: AuditLog, kind: str) -> Tensor:
    values = opened(audit, kind)
    assert values, f"no opening of kind {kind!r}"
    return torch.cat([v.reshape(-1) for v in values])


# ---------------------------------------------------------------------- 1. shares
N = 1 << 18

SECRETS = {
    "zeros": torch.zeros(N, dtype=torch.int64),
    "ramp": torch.arange(N),
    "small integers": torch.arange(N) % 3 - 1,
    "large": torch.where(
        torch.arange(N) % 2 == 0, 2**62 - torch.arange(N), -(2**62) + torch.arange(N)
    ),
    "fixed point": torch.linspace(-1000.0, 1000.0, N, dtype=torch.float64),
}


def coalitions(parties: int) -> list[tuple[int, ...]]:
    """Every set of 1 to K - 1 parties (the most that may collude)."""
    return [c for size in range(1, parties) for c in itertools.combinations(range(parties), size)]


@pytest.mark.parametrize("parties", [2, 3])
@pytest.mark.parametrize("name", list(SECRETS))
def test_shares_are_uniform_and_independent_of_the_secret(parties, name):
    """Each party's row of shares, and the sum of the rows of any coalition short of all
    parties, is uniform and uncorrelated with the secret (the last party's row is the one
    computed from the secret)."""
    secret = SECRETS[name]
    x = Session(parties, seed=list(SECRETS).index(name)).share(secret)
    encoded = encode(secret, x.frac_bits)
    assert torch.equal(x.shares.sum(0), encoded)  # they are shares of the secret
    for coalition in coalitions(parties):
        rows = x.shares[list(coalition)].sum(0)
        what = f"{name} secret, K = {parties}, parties {coalition}"
        assert_uniform(rows, what)
        if name != "zeros":
            assert_uncorrelated(rows, encoded, what)


@pytest.mark.parametrize("parties", [2, 3])
def test_owner_shares_of_private_inputs_are_uniform(parties):
    """The agents' inputs reach the parties from their data owner (Session.input): indicators
    and fixed-point Exp(1) draws, shared the same way."""
    owner = sir_inputs(N, 0.05, seed=2)
    session = Session(parties, seed=3, owner=owner)
    for name, step in (("initial_infected", None), ("draw:sir:", 4)):
        x = session.input(name, step)
        secret = owner(name, step)
        encoded = encode(*secret) if isinstance(secret, tuple) else encode(secret, x.frac_bits)
        assert torch.equal(x.shares.sum(0), encoded)
        for coalition in coalitions(parties):
            rows = x.shares[list(coalition)].sum(0)
            what = f"owner shares of {name}, K = {parties}, parties {coalition}"
            assert_uniform(rows, what)
            assert_uncorrelated(rows, encoded, what)


def test_share_randomness_is_fresh_per_call_and_per_seed():
    """Two shares of the same secret in one session differ everywhere, and the last party's
    shares of two secrets do not differ by the difference of the secrets (a restarted mask
    would give exactly that); other seeds give other shares, the same seed the same ones."""
    x, y = torch.arange(1000), torch.arange(1000) * 7 % 13
    session = Session(2, seed=4)
    first, again, other = (session.share(v).shares for v in (x, x, y))
    assert bool((first != again).all())
    assert not bool(((first[1] - other[1]) == (x - y)).any())
    assert bool((Session(2, seed=5).share(x).shares != first).all())
    assert torch.equal(Session(2, seed=4).share(x).shares, first)


# ---------------------------------------------------------------------- 2. opened masks
@pytest.mark.parametrize("parties", [2, 3])
def test_beaver_and_truncation_masks(parties):
    """A fixed-point product opens ``x - a``, ``y - b`` (Beaver) and ``xy + 2^62 + r``
    (truncation): all uniform and uncorrelated with ``x``, ``y`` and ``xy``."""
    audit = AuditLog(keep_values=True)
    session = Session(parties, seed=6, audit=audit)
    x = torch.linspace(-50.0, 50.0, N, dtype=torch.float64)
    y = (torch.arange(N) % 7 - 3).to(torch.float64) / 4
    z = multiply(session.share(x), session.share(y))
    assert torch.allclose(decode_shares(z), x * y, atol=2e-5)
    e, f = opened(audit, "beaver_mask")
    (c,) = opened(audit, "truncation_mask")
    xs, ys = encode(x), encode(y)
    for mask, secret, what in ((e, xs, "x - a"), (f, ys, "y - b"), (c, xs * ys, "xy + r")):
        assert_uniform(mask, f"{what}, K = {parties}")
        assert_uncorrelated(mask, secret, f"{what}, K = {parties}")


@pytest.mark.parametrize("parties", [2, 3])
def test_comparison_masks(parties):
    """``x > y`` opens the AND masks of the binary adder (uniform words, uncorrelated with
    ``y - x`` or with the result) and one masked bit per element (Bernoulli(1/2), uncorrelated
    with the result, which is 1 for 90% of the elements)."""
    n = 1 << 15
    audit = AuditLog(keep_values=True)
    session = Session(parties, seed=7, audit=audit)
    x = torch.linspace(-5.0, 45.0, n, dtype=torch.float64)
    y = torch.zeros(n, dtype=torch.float64)
    bit = greater(session.share(x), session.share(y))
    expected = (x > y).to(torch.int64)
    assert torch.equal(bit.shares.sum(0), expected)
    words = opened(audit, "binary_mask")
    assert all(w.shape == (n,) for w in words)
    masks = torch.cat(words)
    assert_uniform(masks, f"binary masks, K = {parties}")
    difference = encode(y - x).repeat(len(words))
    assert_uncorrelated(masks, difference, f"binary masks vs y - x, K = {parties}")
    z = correlations((masks >> 63) & 1, expected.repeat(len(words)))["value"]
    assert abs(z) < Z_MAX, f"top bits of the binary masks correlate with the result ({z:.1f} se)"
    (masked,) = opened(audit, "comparison_mask")
    assert_fair_bits(masked, f"comparison masks, K = {parties}")
    z = correlations(masked.to(torch.int64), expected)["value"]
    assert abs(z) < Z_MAX, f"comparison masks correlate with the result ({z:.1f} se)"


# ---------------------------------------------------------------------- 3. a secure SIR run
AGENTS, STEPS = 1000, 25
DECLARED = {
    ("aggregate", "counts"),
    ("beaver_mask", "beaver"),
    ("binary_mask", "and"),
    ("truncation_mask", "truncation"),
    ("comparison_mask", "comparison"),
    ("loss", "loss"),
    ("gradient", "gradient"),
}
WORD_MASKS = ("beaver_mask", "binary_mask", "truncation_mask")


@pytest.fixture(scope="module", params=[2, 3], ids=lambda k: f"K={k}")
def sir_run(request):
    """A secure SIR run with a gradient, its audit log, and the plaintext private values of
    the same realisation, step by step."""
    graph = erdos_renyi(AGENTS, 8.0, seed=1)
    protocol = SIR(0.3, 0.1)
    owner = sir_inputs(AGENTS, 20, seed=3)
    audit = AuditLog(keep_values=True)
    session = Session(request.param, seed=5, owner=owner, audit=audit)
    trajectory = secure_simulate(protocol, graph, STEPS, session, tangents=("transmission_rate",))
    trajectory.gradient(lambda series: (series["I"] ** 2).sum() / 1e4)
    plain = simulate(
        SIR(0.3, 0.1),
        graph,
        STEPS,
        initial_infected=20,
        seed=3,
        dtype=torch.float64,
        record_states=True,
    )
    for k in ("S", "I", "R"):  # the private states below are this run's
        assert torch.equal(trajectory.counts[k], plain.counts[k].detach())
    return audit, _private_values(protocol, graph, owner, plain.states)


def _private_values(protocol, graph, owner, states) -> dict[int, dict[str, Tensor]]:
    """Per step, every per-agent private value of the run as the ring elements it would be
    opened as: 0/1 indicators (scale 0 and 16), draws, force of infection, comparison
    operands and results (scale 16 or 0)."""
    infection = protocol.phases[0]
    (relation,) = infection.relations(graph)
    assert graph.edge_weight(relation) is None
    tau_dt = encode(protocol.transmission_rate.detach().double() * protocol.dt, 24)
    gamma_dt = encode(float(protocol.recovery_rate.detach()) * protocol.dt, 24)
    draws = {"draw": torch.stack([owner.draw("sir", t) for t in range(STEPS)])}  # SIR's stream
    out = {}
    for t in range(STEPS + 1):
        values = {k: states[t][k].detach().to(torch.int64) for k in ("S", "I", "R")}
        if t == 0:
            values["initial_infected"] = owner("initial_infected", None)[0]
        if t < STEPS:
            contacts = infection.transmission(
                graph.csr(relation), states[t]["I"].detach(), torch.tensor(1.0)
            )
            lam = contacts.round().to(torch.int64) * tau_dt
            e_draw = f_draw = encode(draws["draw"][t], 24)
            values |= {
                "draw": e_draw,
                "contacts": contacts.round().to(torch.int64),
                "lambda dt": lam,
                "E - lambda dt": e_draw - lam,
                "F - gamma dt": f_draw - gamma_dt,
                "infection bit": (lam > e_draw).to(torch.int64),
                "recovery bit": (gamma_dt > f_draw).to(torch.int64),
                "infections": (states[t]["S"] - states[t + 1]["S"]).detach().to(torch.int64),
                "recoveries": (states[t + 1]["R"] - states[t]["R"]).detach().to(torch.int64),
            }
        for k in ("S", "I", "R", "infections", "recoveries"):
            if k in values:
                values[f"{k} (scale 16)"] = values[k] << 16
        out[t] = values
    return out


def _pieces(value: Tensor, n: int) -> list[Tensor]:
    """Every length-``n`` vector of an opened ``[m n]`` or ``[m n, P]`` tensor (halves of a
    concatenation, columns of a tangent), as int64."""
    value = value.to(torch.int64)
    flat = value.reshape(value.shape[0], -1) if value.dim() else value.reshape(1, 1)
    if flat.shape[0] % n:
        return []
    blocks = flat.reshape(flat.shape[0] // n, n, -1)  # [m, n, P]
    return [
        blocks[i, :, p].contiguous() for i in range(blocks.shape[0]) for p in range(blocks.shape[2])
    ]


def test_sir_audit_log_has_only_declared_openings(sir_run):
    audit, _ = sir_run
    pairs = {(o.kind, o.name) for o in audit.openings}
    assert pairs == DECLARED, audit.summary()
    assert [o.shape for o in audit.openings if o.kind in ("loss", "gradient")] == [(), (1,)]
    aggregates = [o for o in audit.openings if o.kind == "aggregate"]
    assert len(aggregates) == STEPS + 1
    assert {o.shape for o in aggregates} == {(3,), (5,)}  # S, I, R (+ the day's two flows)
    for o in audit.openings:  # every per-agent opening is a mask
        if o.kind not in ("aggregate", "loss", "gradient") and o.step is not None:
            assert o.shape and o.shape[0] % AGENTS == 0, o
    # after the run: only the gradient's terms, brought to one scale by truncation (masked:
    # the series' tangents from the work precision, then the terms)
    after = {(o.kind, o.shape) for o in audit.openings if o.step is None and o.kind != "aggregate"}
    masks = {("truncation_mask", shape) for shape in ((1,), (STEPS + 1, 1), (STEPS, 1))}
    assert after <= {*masks, ("loss", ()), ("gradient", (1,))}, after


def test_sir_opens_no_private_value(sir_run):
    """No opened length-N piece equals a private per-agent vector, up to sign, a public
    additive offset or a public XOR offset; and no opened mask word equals any private value
    of any agent at any step (chance: about 1e-7)."""
    audit, private = sir_run
    add, xor, labels = {}, {}, {}
    for t, values in private.items():
        for name, p in values.items():
            assert p.shape == (AGENTS,)
            for sign, q in (("+", p), ("-", -p)):
                add[(q - q[0]).numpy().tobytes()] = f"{sign}{name} at step {t}"
            xor[(p ^ p[0]).numpy().tobytes()] = f"{name} at step {t}"
            labels[f"{name} at step {t}"] = p
    checked = 0
    for o, value in zip(audit.openings, audit.values):
        for piece in _pieces(value, AGENTS):
            checked += 1
            hit = add.get((piece - piece[0]).numpy().tobytes()) or xor.get(
                (piece ^ piece[0]).numpy().tobytes()
            )
            assert hit is None, f"opening {o} is {hit} (up to a public offset)"
    assert checked >= len(audit) - STEPS - 3  # all but aggregates, loss and gradient
    private_words = torch.cat([p for values in private.values() for p in values.values()])
    words = torch.cat([pooled(audit, kind) for kind in WORD_MASKS])
    known = private_words.unique()  # sorted
    leaked = known[torch.searchsorted(known, words).clamp(max=known.numel() - 1)] == words
    assert not bool(leaked.any()), f"{int(leaked.sum())} opened mask words are private values"


def test_sir_masks_are_uniform(sir_run):
    audit, _ = sir_run
    for kind in WORD_MASKS:
        assert_uniform(pooled(audit, kind), f"SIR run, {kind}")
    assert_fair_bits(pooled(audit, "comparison_mask"), "SIR run, comparison_mask")


def test_sir_masks_are_uncorrelated_with_the_states(sir_run):
    """Per step, the comparison masks (``[infection bits; recovery bits] ^ r``) and the Beaver
    masks of ``bits * [S; I]`` (the step's first ``2 N`` Beaver product) against the private
    bits and states they hide."""
    audit, private = sir_run
    masked, bits, e_all, f_all, states = [], [], [], [], []
    for t in range(STEPS):
        p = private[t]
        at_t = [(o, v) for o, v in zip(audit.openings, audit.values) if o.step == t]
        (c,) = [v for o, v in at_t if o.kind == "comparison_mask"]
        # the step's first 2 N product is bits * [S; I] (its flows, in one batch; the
        # tangents' products come after it)
        e, f = [v for o, v in at_t if o.kind == "beaver_mask" and o.shape == (2 * AGENTS,)][:2]
        step_bits = torch.cat([p["infection bit"], p["recovery bit"]])
        masked.append(c.to(torch.int64))
        bits.append(step_bits)
        e_all.append(e)
        f_all.append(f)
        states.append(torch.cat([p["S"], p["I"]]))
    bits = torch.cat(bits)
    assert 0.02 < bits.double().mean() < 0.98  # the hidden bits are far from uniform
    z = correlations(torch.cat(masked), bits)["value"]
    assert abs(z) < Z_MAX, f"comparison masks correlate with the comparison bits ({z:.1f} se)"
    assert_uncorrelated(torch.cat(e_all), bits, "Beaver masks of the comparison bits")
    assert_uncorrelated(torch.cat(f_all), torch.cat(states), "Beaver masks of [S; I]")


# ---------------------------------------------------------------------- 4. single use
@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [("triple", {}), ("binary_triple", {}), ("truncation", {"bits": 16}), ("bit", {})],
)
def test_correlated_randomness_is_single_use(kind, kwargs):
    item = Session(2, seed=8).correlation(kind, (4,), **kwargs)
    item.use()
    with pytest.raises(RuntimeError, match="already used"):
        item.use()


def test_masks_never_repeat_in_a_run(sir_run):
    """No two opened mask tensors of the run are equal, and no 64-bit mask word occurs twice
    (a reused triple or mask would repeat ``x - a`` for the same ``x``; by chance a repeat
    among these ~2.5 million uniform words has probability about 2e-7)."""
    audit, _ = sir_run
    for kind in (*WORD_MASKS, "comparison_mask"):
        values = opened(audit, kind)
        distinct = {(tuple(v.shape), v.numpy().tobytes()) for v in values}
        assert len(distinct) == len(values), f"{len(values) - len(distinct)} repeated {kind}s"
    words = torch.cat([pooled(audit, kind) for kind in WORD_MASKS])
    repeats = words.numel() - words.unique().numel()
    assert repeats == 0, f"{repeats} of {words.numel()} opened mask words repeat"


def test_two_products_of_the_same_values_open_different_masks():
    """Multiplying the same shared ``x`` and ``y`` twice must use two triples: the masks
    differ everywhere (with a reused triple they would be equal)."""
    audit = AuditLog(keep_values=True)
    session = Session(2, seed=9, audit=audit)
    x, y = session.share(torch.arange(1000)), session.share(torch.arange(1000) % 5)
    multiply(x, y)
    multiply(x, y)
    e1, f1, e2, f2 = opened(audit, "beaver_mask")
    assert bool((e1 != e2).all()) and bool((f1 != f2).all())
