"""One role per process: each party gets its own row of exactly the shares the in-process
dealer and data owner make with the same seed, exchanges work in one round, failures
surface."""

import time

import pytest
import torch
import torch.distributed as dist

from lpm_graph.secure.dealer import Dealer
from lpm_graph.secure.distributed import DistributedTransport, launch
from lpm_graph.secure.owner import DataOwner, OwnerRole
from lpm_graph.secure.policy import LeakagePolicy
from lpm_graph.secure.prg import Randomness
from lpm_graph.secure.ring import FRAC_BITS, decode
from lpm_graph.secure.session import LocalTransport, Session

SEED = 5
REQUESTS = [
    ("triple", (3,), {}),
    ("binary_triple", (2, 2), {}),
    ("truncation", (4,), {"bits": 16}),
    ("bit", (5,), {}),
]
INPUTS = [("x", None), ("x", 3), ("flags", None)]
X = torch.tensor([[1.5, -2.25], [0.0, 3.0]])


def _owner(name, step):
    if name == "x":
        return X + (step or 0)
    if name == "flags":
        return torch.tensor([1, 0, 1]), 0
    raise KeyError(f"no private input {name!r}")


# the test opens inputs and asks for them again: an owner that serves them more than once,
# and a policy that allows the openings of per-agent values
OWNER = DataOwner(_owner, serve_once=False)
OPEN = LeakagePolicy.unrestricted()


def _party(session):
    """Every correlation and input, gathered back from all parties; errors and rounds."""
    transport = session.transport
    assert isinstance(transport, DistributedTransport)
    calls = []
    all_gather = dist.all_gather

    def counted(*args, **kwargs):
        calls.append(1)
        return all_gather(*args, **kwargs)

    dist.all_gather = counted  # this process only: count communication rounds

    rows, correlations, inputs = [], [], []
    for kind, shape, kwargs in REQUESTS:
        parts = transport.correlation(kind, shape, **kwargs)
        rows += [part.shape[0] for part in parts.values()]
        correlations.append(dict(zip(parts, transport.exchange(list(parts.values())))))
    for name, step in INPUTS:
        shares, bits = transport.input(name, step)
        rows.append(shares.shape[0])
        inputs.append((transport.exchange([shares])[0], bits))
    try:
        transport.input("missing", None)
        owner_error = ""
    except RuntimeError as error:
        owner_error = str(error)
    after_error = transport.correlation("triple", (2,))  # the dealer still serves, in step
    after_error = dict(zip(after_error, transport.exchange(list(after_error.values()))))

    secure = _secure(session)

    rank = session.local[0]
    calls.clear()
    mixed = transport.exchange(
        [
            torch.full((1, 5), 10 + rank, dtype=torch.uint8),
            torch.tensor([[[rank, -rank, 2**62 + rank]]]),
            torch.tensor([[rank % 2 == 0]]),
        ]
    )
    return {
        "local": session.local,
        "rows": rows,
        "correlations": correlations,
        "inputs": inputs,
        "owner_error": owner_error,
        "after_error": after_error,
        "mixed": mixed,
        "mixed_rounds": len(calls),
        "dealer_bytes": transport.dealer_bytes(),
        "owner_bytes": transport.owner_bytes(),
        "secure": secure,
    }


def _secure(session):
    """A Beaver product and a secure comparison of two private inputs, revealed."""
    x, x3 = session.input("x"), session.input("x", 3)
    return session.reveal(x * x3, "product"), session.reveal(x3 > x, "greater")


@pytest.mark.parametrize("parties", [2, 3])
def test_parties_get_their_own_rows_of_the_same_shares_as_the_local_dealer(parties):
    results = launch(
        _party, parties, seed=SEED, owner=OWNER, timeout=120, policy=OPEN, force_insecure=True
    )

    reference = Dealer(parties, seed=SEED)
    owner = OwnerRole(OWNER, parties, FRAC_BITS, Randomness.reproducible(SEED))
    expected = [reference.make(kind, shape, **kwargs) for kind, shape, kwargs in REQUESTS]
    expected_inputs = [owner.share(name, step) for name, step in INPUTS]
    with pytest.raises(KeyError):
        owner.share("missing", None)
    expected_after = reference.make("triple", (2,))
    expected_secure = _secure(
        Session(transport=LocalTransport(reference, [owner]), seed=SEED, policy=OPEN)
    )

    assert len(results) == parties
    for rank, result in enumerate(results):
        assert result["local"] == (rank,)
        assert result["rows"] == [1] * len(result["rows"])  # a party holds only its own row
        for got, want in zip(result["correlations"], expected, strict=True):
            assert got.keys() == want.keys()
            for name in want:
                assert torch.equal(got[name], want[name]), name  # bit for bit, every party's
        for (got, bits), (want, want_bits) in zip(result["inputs"], expected_inputs, strict=True):
            assert bits == want_bits
            assert torch.equal(got, want)
        assert result["owner_error"].startswith(f"data owner 0 (rank {parties + 1})")
        assert "KeyError" in result["owner_error"]
        assert "private input 'missing'" in result["owner_error"]
        assert "no private input" not in result["owner_error"]  # the owner's message stays
        assert all(torch.equal(result["after_error"][k], expected_after[k]) for k in "abc")
        assert all(map(torch.equal, result["secure"], expected_secure))  # bit for bit
        assert result["dealer_bytes"] == reference.bytes_dealt // parties

        u8, i64, flags = result["mixed"]
        assert result["mixed_rounds"] == 1
        assert u8.dtype == torch.uint8 and i64.dtype == torch.int64 and flags.dtype == torch.bool
        assert torch.equal(
            u8, torch.arange(10, 10 + parties, dtype=torch.uint8)[:, None].expand(-1, 5)
        )
        assert torch.equal(i64, torch.tensor([[[r, -r, 2**62 + r]] for r in range(parties)]))
        assert flags.flatten().tolist() == [r % 2 == 0 for r in range(parties)]

    assert sum(r["dealer_bytes"] for r in results) == reference.bytes_dealt
    assert sum(r["owner_bytes"] for r in results) == owner.bytes_sent
    product, greater = expected_secure
    assert torch.allclose(product, (X * (X + 3)).double(), atol=1e-3)
    assert greater.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    # what the shares stand for, independently of the reference dealer
    (x, x_bits), (x3, _), (flags, flag_bits) = results[0]["inputs"]
    assert (x_bits, flag_bits) == (FRAC_BITS, 0)
    assert torch.equal(decode(x.sum(0), x_bits), X.double())
    assert torch.equal(decode(x3.sum(0), x_bits), X.double() + 3)
    assert flags.sum(0).tolist() == [1, 0, 1]
    triple = results[0]["correlations"][0]
    assert torch.equal(triple["a"].sum(0) * triple["b"].sum(0), triple["c"].sum(0))


def _failing_party(session):
    transport = session.transport
    transport.exchange([torch.zeros(1, 2, dtype=torch.int64)])
    if session.local == (1,):
        raise ValueError("party one gives up")
    transport.exchange([torch.zeros(1, 2, dtype=torch.int64)])  # waits for party 1 forever


def test_a_failing_party_makes_launch_raise_at_once():
    start = time.perf_counter()
    with pytest.raises(
        RuntimeError, match=r"party 1 failed:\n(.|\n)*ValueError: party one gives up"
    ):
        launch(_failing_party, 2, timeout=300)
    assert time.perf_counter() - start < 60  # not the process groups' 300 s timeout
