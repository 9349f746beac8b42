"""Bad input to simulate and to the file readers: a clear error naming the argument, the
value and the fix, raised before any work; never a crash inside torch, never a silently wrong
result. Table-driven: each case is the call, the error class and a phrase of its message."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import HeteroData

from lpm_graph import PopulationGraph, simulate
from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.graph.io import read_edge_list, read_node_table
from lpm_graph.protocols import SEIRM, SIR, StagedSEIRM

N = 50


@pytest.fixture(scope="module")
def graph() -> PopulationGraph:
    g = erdos_renyi(N, 4.0, seed=0)
    g.set_node_attrs("agent", age_group=torch.arange(N) % 8)
    return g


def _sir_state(**values: float) -> dict[str, torch.Tensor]:
    state = {k: torch.zeros(N) for k in ("S", "I", "R")}
    state["S"] += 1
    for key, value in values.items():
        state[key] = torch.full((N,), float(value))
    return state


CASES = [
    # (id, call(graph), error class, phrase)
    ("state and initial_infected", lambda g: simulate(SIR(0.1, 0.1), g, 3, state=_sir_state(),
                                                        initial_infected=5),
     ValueError, "not both"),
    ("state with S = 2", lambda g: simulate(SIR(0.1, 0.1), g, 3, state=_sir_state(S=2.0)),
     ValueError, "state['S'] must hold"),
    ("state with I = -1", lambda g: simulate(SIR(0.1, 0.1), g, 3, state=_sir_state(I=-1.0)),
     ValueError, "[-1, -1]"),
    ("state with NaN", lambda g: simulate(SIR(0.1, 0.1), g, 3,
                                          state=_sir_state(I=float("nan"))),
     ValueError, "NaN"),
    ("state missing a key", lambda g: simulate(SIR(0.1, 0.1), g, 3,
                                               state={"S": torch.ones(N), "I": torch.zeros(N)}),
     ValueError, "lacks ['R']"),
    ("state with a misspelt key", lambda g: simulate(SIR(0.1, 0.1), g, 3, state={
        "s": torch.ones(N), "I": torch.zeros(N), "R": torch.zeros(N)}),
     ValueError, "lacks ['S']"),
    ("state of the wrong length", lambda g: simulate(SIR(0.1, 0.1), g, 3, state={
        k: torch.zeros(N + 1) for k in "SIR"}), ValueError, "shape [51]"),
    ("state of lists", lambda g: simulate(SIR(0.1, 0.1), g, 3, state={"S": [1.0] * N}),
     TypeError, "state['S'] must be a tensor"),
    ("state not a mapping", lambda g: simulate(SIR(0.1, 0.1), g, 3, state=torch.ones(N)),
     TypeError, "mapping"),
    ("SEIRM state with a flat E", lambda g: simulate(SEIRM(2.0), g, 3, state={
        "S": torch.ones(N), "E": torch.zeros(N), "I": torch.zeros(N, 5), "R": torch.zeros(N),
        "M": torch.zeros(N)}), ValueError, "state['E'] has shape [50]"),
    ("dtype as a string", lambda g: simulate(SIR(0.1, 0.1), g, 3, initial_infected=5,
                                             dtype="float32"),
     TypeError, "torch.dtype"),
    ("dtype float16", lambda g: simulate(SIR(0.1, 0.1), g, 3, initial_infected=5,
                                         dtype=torch.float16),
     ValueError, "float32 or float64"),
    ("dtype int64", lambda g: simulate(SIR(0.1, 0.1), g, 3, initial_infected=5,
                                       dtype=torch.int64),
     ValueError, "not supported"),
    ("a HeteroData as the graph", lambda g: simulate(SIR(0.1, 0.1), HeteroData(), 3,
                                                     initial_infected=5),
     TypeError, "PopulationGraph.from_pyg"),
    ("num_nodes as a node attribute", lambda g: g.set_node_attrs("agent",
                                                                 num_nodes=torch.zeros(N)),
     ValueError, "not a per-node attribute"),
    ("num_nodes as a float", lambda g: g.set_node_attrs("agent", num_nodes=torch.tensor(5.7)),
     ValueError, "cannot change"),
    ("a population larger than memory", lambda g: SyntheticPopulation(99_999_999_999_999),
     ValueError, "GiB to build"),
    ("an edge index as the graph", lambda g: simulate(SIR(0.1, 0.1), torch.zeros(2, 3), 3,
                                                      initial_infected=5),
     TypeError, "from_edge_index"),
]  # fmt: skip


def _sir(g, **kwargs):
    return simulate(SIR(0.3, 0.1), g, 3, **kwargs)


def _empty(num_nodes: int) -> PopulationGraph:
    return PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), num_nodes)


RUN_CASES = [
    # simulate's arguments
    (
        "steps negative",
        lambda g: simulate(SIR(0.3, 0.1), g, -1, initial_infected=2),
        ValueError,
        "steps must be a non-negative int, got -1",
    ),
    (
        "steps a float",
        lambda g: simulate(SIR(0.3, 0.1), g, 3.0, initial_infected=2),
        ValueError,
        "steps must be a non-negative int, got 3.0",
    ),
    (
        "steps beyond memory",
        lambda g: simulate(SIR(0.3, 0.1), g, 10**13, initial_infected=2),
        ValueError,
        "GiB and this machine has",
    ),
    (
        "mode unknown",
        lambda g: _sir(g, initial_infected=2, mode="mean"),
        ValueError,
        "mode='mean' is not a simulation mode",
    ),
    (
        "estimator unknown",
        lambda g: _sir(g, initial_infected=2, estimator="reinforce"),
        ValueError,
        "estimator='reinforce' is not known",
    ),
    (
        "alternatives 0",
        lambda g: _sir(g, initial_infected=2, alternatives=0),
        ValueError,
        "alternatives must be a positive int, got 0",
    ),
    (
        "checkpoint 0",
        lambda g: _sir(g, initial_infected=2, checkpoint=0),
        ValueError,
        "checkpoint must be None or a positive number of steps, got 0",
    ),
    (
        "checkpoint True",
        lambda g: _sir(g, initial_infected=2, checkpoint=True),
        ValueError,
        "checkpoint must be None or a positive number of steps, got True",
    ),
    (
        "replicates 0",
        lambda g: _sir(g, initial_infected=2, replicates=0),
        ValueError,
        "replicates must be None or a positive int, got 0",
    ),
    (
        "replicates True",
        lambda g: _sir(g, initial_infected=2, replicates=True),
        ValueError,
        "replicates must be None or a positive int, got True",
    ),
    (
        "replicates beyond memory",
        lambda g: _sir(g, initial_infected=2, replicates=10**12),
        ValueError,
        "replicate(s) x 3 steps needs about",
    ),
    (
        "seed a float",
        lambda g: _sir(g, initial_infected=2, seed=1.5),
        ValueError,
        "seed must be an int or a sequence of ints",
    ),
    ("seed a str", lambda g: _sir(g, initial_infected=2, seed="1"), ValueError, "got '1'"),
    ("seed None", lambda g: _sir(g, initial_infected=2, seed=None), ValueError, "got None"),
    (
        "seed an empty list",
        lambda g: _sir(g, initial_infected=2, seed=[]),
        ValueError,
        "seed is an empty sequence",
    ),
    (
        "seeds and replicates that disagree",
        lambda g: _sir(g, initial_infected=2, seed=[1, 2], replicates=3),
        ValueError,
        "replicates=3 but 2 seeds were given",
    ),
    (
        "protocol a str",
        lambda g: simulate("SIR", g, 3, initial_infected=2),
        ValueError,
        "protocol must be a lpm_graph Protocol",
    ),
    (
        "protocol the class",
        lambda g: simulate(SIR, g, 3, initial_infected=2),
        ValueError,
        "got type",
    ),
    (
        "graph None",
        lambda g: _sir(None, initial_infected=2),
        TypeError,
        "graph must be a lpm_graph.PopulationGraph, got NoneType",
    ),
    (
        "a graph beyond memory",
        lambda g: _sir(_empty(10**13), initial_infected=2),
        ValueError,
        "a run of 10,000,000,000,000 agents",
    ),
    # initial_infected
    ("initial_infected missing", lambda g: _sir(g), ValueError, "initial_infected is required"),
    (
        "initial_infected negative",
        lambda g: _sir(g, initial_infected=-1),
        ValueError,
        "initial_infected=-1 must be between 0 and the 50 agents",
    ),
    (
        "initial_infected above N",
        lambda g: _sir(g, initial_infected=N + 1),
        ValueError,
        "initial_infected=51",
    ),
    (
        "initial_infected 1.0",
        lambda g: _sir(g, initial_infected=1.0),
        ValueError,
        "as a float is a fraction of agents and must be in (0, 1)",
    ),
    (
        "initial_infected NaN",
        lambda g: _sir(g, initial_infected=math.nan),
        ValueError,
        "initial_infected=nan",
    ),
    (
        "initial_infected True",
        lambda g: _sir(g, initial_infected=True),
        ValueError,
        "initial_infected is required",
    ),
    (
        "initial_infected a str",
        lambda g: _sir(g, initial_infected="5"),
        ValueError,
        "initial_infected must be an int, a float, or a tensor, got str",
    ),
    (
        "initial_infected a list of ids",
        lambda g: _sir(g, initial_infected=[1, 2]),
        ValueError,
        "pass agent ids as torch.tensor(ids)",
    ),
    (
        "initial_infected a 0-d int tensor",
        lambda g: _sir(g, initial_infected=torch.tensor(2)),
        ValueError,
        "initial_infected is a 0-d tensor",
    ),
    (
        "initial_infected a 0-d float tensor",
        lambda g: _sir(g, initial_infected=torch.tensor(0.5)),
        ValueError,
        "pass a count as an int",
    ),
    (
        "initial_infected a 0-d mask",
        lambda g: _sir(g, initial_infected=torch.tensor(True)),
        ValueError,
        "initial_infected is a 0-d tensor",
    ),
    (
        "initial_infected ids out of range",
        lambda g: _sir(g, initial_infected=torch.tensor([0, N])),
        ValueError,
        "agent ids outside [0, 50)",
    ),
    (
        "initial_infected ids 2-D",
        lambda g: _sir(g, initial_infected=torch.tensor([[0, 1], [2, 3]])),
        ValueError,
        "as agent ids must be 1-D, got shape [2, 2]",
    ),
    (
        "initial_infected a mask of the wrong length",
        lambda g: _sir(g, initial_infected=torch.zeros(N + 1, dtype=torch.bool)),
        ValueError,
        "mask has 51 entries for 50 agents",
    ),
    (
        "initial_infected probabilities of the wrong length",
        lambda g: _sir(g, initial_infected=torch.full((N - 1,), 0.1)),
        ValueError,
        "probabilities have 49 entries for 50 agents",
    ),
    (
        "initial_infected probabilities above 1",
        lambda g: _sir(g, initial_infected=torch.full((N,), 1.5)),
        ValueError,
        "initial_infected must be a probability in [0, 1]",
    ),
    (
        "initial_infected complex",
        lambda g: _sir(g, initial_infected=torch.zeros(N, dtype=torch.complex64)),
        ValueError,
        "initial_infected must hold real values",
    ),
    (
        "initial_infected on the meta device",
        lambda g: _sir(g, initial_infected=torch.tensor([1], device="meta")),
        ValueError,
        "on meta",
    ),
    # state
    (
        "state in float16",
        lambda g: simulate(
            SIR(0.3, 0.1), g, 3, state={k: torch.zeros(N, dtype=torch.float16) for k in "SIR"}
        ),
        ValueError,
        "state['S'] is torch.float16",
    ),
    (
        "state of ints",
        lambda g: simulate(
            SIR(0.3, 0.1), g, 3, state={k: torch.zeros(N, dtype=torch.long) for k in "SIR"}
        ),
        ValueError,
        "state['S'] is torch.int64",
    ),
    (
        "state on another device",
        lambda g: simulate(
            SIR(0.3, 0.1), g, 3, state={k: torch.zeros(N, device="meta") for k in "SIR"}
        ),
        ValueError,
        "state['S'] is on meta, the graph on cpu",
    ),
    (
        "state with every agent in S, I and R",
        lambda g: simulate(SIR(0.3, 0.1), g, 3, state={k: torch.ones(N) for k in "SIR"}),
        ValueError,
        "every agent must be in exactly one compartment",
    ),
    (
        "state with nobody anywhere",
        lambda g: simulate(SIR(0.3, 0.1), g, 3, state={k: torch.zeros(N) for k in "SIR"}),
        ValueError,
        "agent 0's sum to [0.0]",
    ),
    (
        "StagedSEIRM state with an agent twice",
        lambda g: simulate(StagedSEIRM(), g, 2, state=_twice(StagedSEIRM(), g)),
        ValueError,
        "every agent must be in exactly one compartment",
    ),
]


def _twice(protocol, g):
    """A valid state of ``protocol`` with agent 0 both susceptible and recovered."""
    from lpm_graph.layers import RandomStreams

    state = protocol.initial_state(g, 0, RandomStreams(0), None, torch.float32, "stochastic")
    state["R"][0] = 1.0
    return state


@pytest.mark.parametrize(("call", "error", "phrase"), [c[1:] for c in CASES + RUN_CASES],
                         ids=[c[0] for c in CASES + RUN_CASES])  # fmt: skip
def test_bad_run_input_is_a_clear_error(graph, call, error, phrase):
    with pytest.raises(error) as raised:
        call(graph)
    assert phrase in str(raised.value)


def test_numpy_counts_and_seeds_are_accepted(graph):
    """A count or a seed from numpy is a count or a seed, not an error; half-precision
    probabilities run in the default float dtype."""
    import numpy as np

    a = simulate(SIR(0.3, 0.1), graph, np.int64(3), initial_infected=np.int64(2), seed=np.int64(4))
    b = simulate(SIR(0.3, 0.1), graph, 3, initial_infected=2, seed=4)
    assert torch.equal(a.counts["I"], b.counts["I"])
    half = torch.full((N,), 0.1, dtype=torch.float16)
    assert (
        simulate(SIR(0.3, 0.1), graph, 2, initial_infected=half).counts["S"].dtype == torch.float32
    )


def test_a_valid_state_still_runs(graph):
    state = _sir_state()
    state["S"][:3], state["I"][:3] = 0.0, 1.0
    traj = simulate(SIR(0.3, 0.1), graph, 5, state=state, seed=0)
    assert float(traj.counts["I"][0].detach()) == 3.0


def test_byte_order_mark_is_not_a_header(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a BOM: the first contact and the id column
    must survive it."""
    edges = tmp_path / "contacts.csv"
    edges.write_bytes(b"\xef\xbb\xbf0,1\n1,2\n2,3\n")
    g = read_edge_list(edges)
    assert g.num_nodes() == 4 and g.edge_index()[:, 0].tolist() == [0, 1]
    nodes = tmp_path / "people.csv"
    nodes.write_bytes(b"\xef\xbb\xbfid,age\n0,5\n1,10\n")
    table = read_node_table(nodes)
    assert table["age"].tolist() == [5, 10]


def test_a_target_that_requires_grad_trains(graph):
    """The usual synthetic-data recipe without .detach(): the target came out of a simulator
    with gradients on. It used to crash at epoch 1 ("backward through the graph a second
    time"); a target is observed data, so it is detached."""
    from lpm_graph.train import Bounded, ParameterSet, SimulatorModel, Trainer

    def model() -> SimulatorModel:
        params = ParameterSet({"reproduction_number": Bounded(2.0, 0.5, 6.0)})
        return SimulatorModel(SEIRM(learnable=False), graph, 20, params, initial_infected=0.1,
                              outputs=("infections",), mode="expected")  # fmt: skip

    target = model()()  # requires grad
    assert target["infections"].requires_grad
    history = Trainer(model(), lr=0.05).fit(target, train=slice(0, 15), val=slice(15, 20),
                                            epochs=2)  # fmt: skip
    assert len(history.loss) == 2 and all(math.isfinite(v) for v in history.loss)


def test_a_stray_word_in_a_numeric_column_is_an_error_naming_its_line(tmp_path):
    """One 'unknown' among ages used to recode the whole column as categories (5, 10, 30 ->
    2, 0, 1) without a word."""
    nodes = tmp_path / "people.csv"
    nodes.write_text("id,age,sex\n0,5,f\n1,10,m\n2,unknown,f\n3,30,m\n")
    with pytest.raises(ValueError, match=r"people.csv:4.*'age'.*'unknown'.*category"):
        read_node_table(nodes)
    table = read_node_table(nodes, columns={"age": "category", "sex": "category"})
    assert table.categories["age"] == ["10", "30", "5", "unknown"]
    nodes.write_text("id,age,sex\n0,5,f\n1,10,m\n2,,f\n3,30,m\n")  # a missing value: NaN
    table = read_node_table(nodes)
    assert table["age"][[0, 1, 3]].tolist() == [5.0, 10.0, 30.0]
    assert table["age"][2].isnan() and table.categories["sex"] == ["f", "m"]


def test_an_absurd_id_names_its_line(tmp_path):
    """An edge file with the id 100000000000000 became a graph of 10^14 nodes."""
    edges = tmp_path / "contacts.csv"
    edges.write_text("0,1\n1,2\n2,100000000000000\n")
    with pytest.raises(ValueError, match=r"100000000000000.*line 3.*num_nodes="):
        read_edge_list(edges)
    big = tmp_path / "big.csv"
    big.write_text("0,1\n1,20000000\n")
    with pytest.raises(ValueError, match="num_nodes="):
        read_edge_list(big)
    assert read_edge_list(big, num_nodes=20_000_001).num_nodes() == 20_000_001  # meant
    sparse = tmp_path / "sparse.csv"
    sparse.write_text("0,1\n5,9000000\n")  # below the floor: ids need not be dense
    assert read_edge_list(sparse).num_nodes() == 9_000_001
