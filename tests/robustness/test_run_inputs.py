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
from lpm_graph.protocols import SEIRM, SIR

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


@pytest.mark.parametrize(("call", "error", "phrase"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_run_input_is_a_clear_error(graph, call, error, phrase):
    with pytest.raises(error) as raised:
        call(graph)
    assert phrase in str(raised.value)


def test_a_valid_state_still_runs(graph):
    state = _sir_state()
    state["S"][:3], state["I"][:3] = 0.0, 1.0
    traj = simulate(SIR(0.3, 0.1), graph, 5, state=state, seed=0)
    assert float(traj.counts["I"][0]) == 3.0


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
