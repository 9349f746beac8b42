"""The Dataset base: the PyG contract, the argument-keyed cache, transforms, atomic saves."""

from __future__ import annotations

import copy

import pytest
import torch

from lpm_graph import PopulationGraph
from lpm_graph.datasets import Dataset
from lpm_graph.graph.storage import load_graph, save_graph


class Ring(Dataset):
    """A ring of ``n`` agents; counts how often it was processed."""

    calls = 0

    def __init__(self, root, n: int = 5, fail: bool = False, **kwargs) -> None:
        self.n, self.fail = n, fail
        super().__init__(root, **kwargs)

    def cache_args(self):
        return {"n": self.n}

    def process(self) -> None:
        type(self).calls += 1
        if self.fail:
            raise RuntimeError("boom")
        idx = torch.arange(self.n)
        graph = PopulationGraph.from_edge_index(torch.stack([idx, (idx + 1) % self.n]), self.n)
        path = self.processed_paths[0] if self.root is not None else None
        self.save([graph], path)


class AddAge:
    def __call__(self, graph: PopulationGraph) -> PopulationGraph:
        graph.set_node_attrs(age=torch.arange(graph.num_nodes()))
        return graph

    def __repr__(self) -> str:
        return "AddAge()"


@pytest.fixture(autouse=True)
def reset_calls():
    Ring.calls = 0


def test_second_load_comes_from_the_cache(tmp_path):
    first = Ring(tmp_path)
    second = Ring(tmp_path)
    assert Ring.calls == 1
    assert torch.equal(first[0].edge_index(), second[0].edge_index())
    assert len(second) == 1 and isinstance(second[0], PopulationGraph)
    assert second.processed_paths[0].parent == tmp_path / "processed"


def test_a_changed_argument_processes_again_and_keeps_the_old_files(tmp_path):
    five = Ring(tmp_path, n=5)
    six = Ring(tmp_path, n=6)
    assert Ring.calls == 2
    assert six[0].num_nodes() == 6
    assert five.processed_paths[0] != six.processed_paths[0]
    assert five.processed_paths[0].exists() and six.processed_paths[0].exists()
    Ring(tmp_path, n=5)
    assert Ring.calls == 2  # both versions stay cached


def test_pre_transform_runs_once_and_is_part_of_the_cache_key(tmp_path):
    plain = Ring(tmp_path)
    aged = Ring(tmp_path, pre_transform=AddAge())
    assert Ring.calls == 2
    assert "age" not in plain[0].node_attrs() and "age" in aged[0].node_attrs()
    again = Ring(tmp_path, pre_transform=AddAge())
    assert Ring.calls == 2
    assert torch.equal(again[0]["agent"].age, torch.arange(5))


def test_transform_runs_on_access_and_does_not_change_the_cached_item(tmp_path):
    ds = Ring(tmp_path, transform=AddAge())
    assert "age" in ds[0].node_attrs()
    assert "age" not in ds.get(0).node_attrs()


def test_changing_an_item_leaves_the_dataset_alone(tmp_path):
    ds = Ring(tmp_path)
    ds[0].set_node_attrs(x=torch.zeros(5))
    assert "x" not in ds[0].node_attrs()


def test_force_reload_and_in_memory(tmp_path):
    Ring(tmp_path)
    Ring(tmp_path, force_reload=True)
    assert Ring.calls == 2
    mem = Ring(False)
    assert mem.root is None and mem[0].num_nodes() == 5
    with pytest.raises(ValueError, match="root=False"):
        mem.processed_dir  # noqa: B018


def test_a_failed_process_keeps_what_was_cached(tmp_path):
    good = Ring(tmp_path)
    before = good.processed_paths[0].read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        Ring(tmp_path, force_reload=True, fail=True)
    assert good.processed_paths[0].read_bytes() == before
    assert not [p for p in (tmp_path / "processed").iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_cache_is_rebuilt(tmp_path):
    ds = Ring(tmp_path)
    ds.processed_paths[0].write_bytes(b"not a torch file")
    again = Ring(tmp_path)
    assert Ring.calls == 2 and again[0].num_nodes() == 5


def test_indexing(tmp_path):
    ds = Ring(tmp_path)
    assert ds[-1].num_nodes() == 5
    assert [g.num_nodes() for g in ds] == [5]
    with pytest.raises(IndexError, match="out of range"):
        ds[1]
    with pytest.raises(TypeError, match="ints"):
        ds["0"]


def test_missing_raw_files_name_them(tmp_path):
    class NeedsRaw(Ring):
        @property
        def raw_file_names(self):
            return ["edges.csv"]

    with pytest.raises(ValueError, match="edges.csv"):
        NeedsRaw(tmp_path)


def test_save_and_load_graph_round_trip(tmp_path):
    idx = torch.arange(4)
    graph = PopulationGraph.from_edge_index(
        torch.stack([idx, (idx + 1) % 4]), 4, edge_weight=torch.rand(4, dtype=torch.float64)
    )
    graph.set_node_attrs(age=torch.tensor([1, 2, 3, 4], dtype=torch.int8))
    graph.data.note = "ring"
    save_graph(graph, tmp_path / "g.pt")
    back = load_graph(tmp_path / "g.pt")
    assert torch.equal(back.edge_index(), graph.edge_index())
    assert torch.equal(back.edge_weight(), graph.edge_weight())
    assert back["agent"].age.dtype == torch.int8
    assert back.meta == {"note": "ring"}
    assert copy.copy(back).meta == {"note": "ring"}
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a PopulationGraph file"):
        load_graph(tmp_path / "other.pt")
