"""Roles: data owners share their own inputs, the dealer never receives one, and each process
receives only its role's part (finding 2 of the security review)."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
from pathlib import Path

import pytest
import torch

from lpm_graph.secure import (
    DataOwner,
    Dealer,
    LeakagePolicy,
    Session,
    launch,
    session_from_env,
)
from lpm_graph.secure.distributed import _role_part, _Setup
from lpm_graph.secure.prg import Randomness

N = 12
X = torch.linspace(-3.0, 5.0, N, dtype=torch.float64)


class _Secret:
    """An owner whose inputs are ``X`` at its agents, holding a secret string, and writing
    which process asks it for an input (into ``log``)."""

    def __init__(self, secret: str, agents: torch.Tensor | None, log: str | None = None) -> None:
        self.secret = secret
        self.agents = agents
        self.log = log

    def __call__(self, name, step):
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{mp.current_process().name}|{self.secret}\n")
        values = X if self.agents is None else X[self.agents]
        return values + (step or 0)


def _reveal_x(session):
    return session.reveal(session.input("x", 2), "x", kind="output")


EVEN, ODD = torch.arange(0, N, 2), torch.arange(1, N, 2)
OPEN = LeakagePolicy(outputs=True)  # these tests open the per-agent input to check it


def _two_owners(log: str | None = None) -> list[DataOwner]:
    return [
        DataOwner(_Secret("canary-even-1c9e", EVEN, log), agents=EVEN, num_agents=N),
        DataOwner(_Secret("canary-odd-77b2", ODD, log), agents=ODD, num_agents=N),
    ]


def test_each_process_receives_only_its_role_part():
    """What launch pickles into each process: the parties get the party function and no
    owner, the dealer neither, each owner its own owner only."""
    owners = _two_owners()
    setup = _Setup(2, Randomness(), tuple(owners), 2, 16, 60.0, None, None)
    for rank, (holds, lacks) in enumerate(
        [
            ({"_reveal_x"}, {"canary-even", "canary-odd"}),
            ({"_reveal_x"}, {"canary-even", "canary-odd"}),
            (set(), {"canary-even", "canary-odd", "_reveal_x"}),  # the dealer
            ({"canary-even"}, {"canary-odd", "_reveal_x"}),
            ({"canary-odd"}, {"canary-even", "_reveal_x"}),
        ]
    ):
        sent = pickle.dumps(_role_part(rank, setup, _reveal_x, ()))
        for word in holds:
            assert word.encode() in sent, (rank, word)
        for word in lacks:
            assert word.encode() not in sent, (rank, word)


def test_only_the_owners_process_computes_its_inputs(tmp_path):
    """Every input request reaches the owner's own process; neither a party nor the dealer
    ever calls an owner."""
    log = tmp_path / "calls.log"
    results = launch(_reveal_x, 2, owners=_two_owners(str(log)), timeout=120, policy=OPEN)
    for opened in results:
        assert torch.allclose(opened, X + 2, atol=2**-15)
    calls = log.read_text().splitlines()
    assert sorted(set(calls)) == [
        "data owner 0 (rank 3)|canary-even-1c9e",
        "data owner 1 (rank 4)|canary-odd-77b2",
    ]


def test_the_dealer_has_no_input_to_give():
    assert not hasattr(Dealer(2), "input")
    assert "owner" not in Dealer.__init__.__code__.co_varnames


def test_several_owners_partition_the_agents_in_process():
    session = Session(2, owners=_two_owners(), policy=OPEN)
    x = session.input("x", 2)
    assert x.shares.shape == (2, N)
    assert torch.allclose(session.reveal(x, "x"), X + 2, atol=2**-15)
    # each owner sent shares of its own agents only
    sent = [role.bytes_sent for role in session.transport.owners]
    assert sent == [2 * 8 * len(EVEN), 2 * 8 * len(ODD)]


@pytest.mark.parametrize(
    ("owners", "phrase"),
    [
        ([DataOwner(_Secret("a", None))] * 2, "each must be a DataOwner"),
        ([DataOwner(_Secret("a", EVEN), agents=EVEN, num_agents=N)] * 2, "have several"),
        ([DataOwner(_Secret("a", EVEN), agents=EVEN, num_agents=N)], "6 agents have no owner"),
        (
            [
                DataOwner(_Secret("a", EVEN), agents=EVEN, num_agents=N),
                DataOwner(_Secret("b", ODD[:-1]), agents=ODD[:-1], num_agents=N),
            ],
            "1 agents have no owner",
        ),
    ],
)
def test_owners_must_partition_the_agents(owners, phrase):
    with pytest.raises(ValueError, match=phrase):
        Session(2, owners=owners)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"agents": torch.tensor([0.5])}, "integer agent ids"),
        ({"agents": torch.tensor([0, 1])}, "num_agents="),
        ({"agents": torch.tensor([0, 12]), "num_agents": 12}, "outside 0..11"),
        ({"agents": torch.tensor([3, 3]), "num_agents": 12}, "twice"),
    ],
)
def test_a_data_owner_checks_its_agents(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        DataOwner(_Secret("a", None), **kwargs)


def test_an_owner_checks_the_rows_of_its_inputs():
    owner = DataOwner(_Secret("a", EVEN[:-1]), agents=EVEN, num_agents=N // 2 + N // 2)
    session = Session(2, owners=[owner, DataOwner(_Secret("b", ODD), agents=ODD, num_agents=N)])
    with pytest.raises(ValueError, match="one row per agent of the owner"):
        session.input("x", 0)


def test_an_owner_refuses_an_input_beyond_the_ring():
    session = Session(2, owner=lambda name, step: torch.tensor([2.0**50]))
    with pytest.raises(ValueError, match=r"owner 0's private input 'x'.*does not fit"):
        session.input("x")


# ---------------------------------------------------------------------- torchrun layout
def _make_owner():
    """An owner factory: it runs in the owner's rank only (it leaves a mark to prove it)."""
    Path(os.environ["LPM_TEST_MARKS"], f"rank{os.environ['RANK']}").touch()
    return _Secret("canary-env", None)


def _env_rank(rank: int, world: int, port: int, marks: str, out) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        LPM_TEST_MARKS=marks,
    )  # fmt: skip
    session = session_from_env(owners=[_make_owner], timeout=60, policy=OPEN)
    if session is not None:
        out.put((rank, _reveal_x(session).tolist()))
        session.close()


def test_session_from_env_builds_each_owner_in_its_own_rank_only(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    out = context.Queue()
    world = 4  # 2 parties, the dealer, one owner
    procs = [
        context.Process(target=_env_rank, args=(r, world, port, str(tmp_path), out))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=120) for _ in range(2))
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * world
    assert sorted(got) == [0, 1]
    for values in got.values():
        assert torch.allclose(torch.tensor(values, dtype=torch.float64), X + 2, atol=2**-15)
    assert sorted(os.listdir(tmp_path)) == ["rank3"]  # the factory ran in the owner's rank only
