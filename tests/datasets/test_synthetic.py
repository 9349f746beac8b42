"""SyntheticPopulation: statistics against its inputs, structure, determinism, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lpm_graph import PopulationGraph
from lpm_graph.datasets import PlacesAsNodes, PopulationSpec, SyntheticPopulation
from lpm_graph.datasets.synthetic import (
    CENSUS_AGE_SHARES,
    CENSUS_HOUSEHOLD_SIZES,
    RANDOM_CONTACTS,
    _group_contacts,
    _within_groups,
    population_statistics,
)

# GradABM source files of the default numbers (see data/gradabm_ma/PROVENANCE.md)
SOURCE = Path(__file__).resolve().parent / "data" / "gradabm_ma"
N = 100_000


@pytest.fixture(scope="module")
def population() -> PopulationGraph:
    return SyntheticPopulation(N, seed=3)[0]


def relative(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def test_statistics_match_the_inputs_within_2_percent(population):
    spec = PopulationSpec()
    stats = population_statistics(population)
    for got, want in zip(stats["age_shares"], spec.age_shares):
        assert relative(got, want) < 0.02
    sizes, shares = spec.household_pmf()
    for k, want in zip(sizes.tolist(), shares):
        assert relative(stats["household_sizes"][k], want) < 0.02
    expected = spec.expected_degrees()
    for rel, want in expected.items():
        assert relative(stats["mean_degree"][rel], want) < 0.02, rel


def test_defaults_are_the_source_numbers():
    text = (SOURCE / "25011_generated_params.yaml").read_text().splitlines()

    def block(name: str) -> list[float]:
        start = text.index(f"{name}:") + 1
        values = []
        for line in text[start:]:
            if not line.startswith("- "):
                break
            values.append(float(line[2:]))
        return values

    assert list(CENSUS_AGE_SHARES) == block("age_ix_prob_list")
    sizes = block("households_sizes_list")
    assert dict(zip(map(int, sizes), block("households_sizes_prob_list"))) == CENSUS_HOUSEHOLD_SIZES
    rows = (SOURCE / "RandomNetworkParameters.csv").read_text(encoding="utf-8-sig").split()
    assert [tuple(map(float, r.split(",")[1:])) for r in rows[1:]] == list(RANDOM_CONTACTS)


def test_every_relation_is_simple_and_symmetric(population):
    n = population.num_nodes()
    for rel in population.relations:
        ei = population.edge_index(rel)
        assert not bool((ei[0] == ei[1]).any()), rel
        key = ei[0] * n + ei[1]
        assert key.unique().numel() == key.numel(), rel
        assert torch.equal(key.sort().values, (ei[1] * n + ei[0]).sort().values), rel
        assert population.data[rel].undirected is True
    PopulationGraph(population.data, allow_self_loops=False, allow_duplicates=False)


def test_households_are_cliques_headed_by_adults(population):
    agents = population["agent"]
    size = torch.bincount(agents.household)[agents.household]
    degree = torch.bincount(population.edge_index("household")[1], minlength=N)
    assert torch.equal(degree, size - 1)
    head = torch.ones(N, dtype=torch.bool)
    head[1:] = agents.household[1:] != agents.household[:-1]  # members are consecutive
    assert bool((agents.age_group[head] >= 1).all())
    assert int(head.sum()) == int(agents.household.max()) + 1
    assert population.meta["num_households"] == int(head.sum())


def test_contacts_stay_within_places(population):
    agents = population["agent"]
    for rel, place in (("school", agents.school), ("work", agents.workplace)):
        ei = population.edge_index(rel)
        assert bool((place[ei[0]] >= 0).all())
        assert torch.equal(place[ei[0]], place[ei[1]])
    ei = population.edge_index("household")
    assert torch.equal(agents.household[ei[0]], agents.household[ei[1]])


def test_schools_and_workplaces_follow_the_rules(population):
    spec = PopulationSpec()
    agents = population["agent"]
    at_school = agents.school >= 0
    working = agents.workplace >= 0
    assert not bool((at_school & working).any())
    student = at_school & (agents.age < 20)
    teacher = at_school & (agents.age >= 20)
    assert bool((agents.age[student] >= spec.school_ages[0]).all())
    assert bool((agents.age[student] <= spec.school_ages[1]).all())
    assert bool(((agents.age[teacher] >= 20) & (agents.age[teacher] <= 64)).all())
    assert bool(((agents.age[working] >= 20) & (agents.age[working] <= 64)).all())
    # one teacher per 15.9 students, per school
    students = torch.bincount(agents.school[student])
    teachers = torch.bincount(agents.school[teacher], minlength=students.numel())
    ratio = students.double() / teachers.double()
    assert bool(((ratio - spec.student_teacher_ratio).abs() < 1.0).all())
    # a school holds one level: its students' ages span at most one level's range
    for s in range(students.numel()):
        ages = agents.age[student & (agents.school == s)]
        levels = np.searchsorted(spec.school_levels, ages.numpy(), side="right")
        assert len(set(levels.tolist())) == 1
    # enrollment and employment rates
    school_age = (agents.age >= 5) & (agents.age <= 17)
    assert relative(float(student.sum()) / float(school_age.sum()), spec.enrollment) < 0.02
    working_age = (agents.age >= 20) & (agents.age <= 64)
    employed = (working | teacher).sum()
    assert relative(float(employed) / float(working_age.sum()), spec.employment_rate) < 0.02


def test_large_places_get_the_requested_mean_degree(population):
    agents = population["agent"]
    ei = population.edge_index("work")
    size = torch.bincount(agents.workplace[agents.workplace >= 0])
    degree = torch.bincount(ei[1], minlength=N)
    worker = agents.workplace >= 0
    big = worker & (size[agents.workplace.clamp(min=0)] > 17)
    small = worker & ~big
    # places of at most 17 (d + 1) are cliques; larger ones have mean degree 16 (rounding)
    assert torch.equal(degree[small], size[agents.workplace[small]] - 1)
    assert abs(float(degree[big].double().mean()) - 16.0) < 0.01


def test_same_seed_same_population_other_seed_other():
    a, b = SyntheticPopulation(5_000, seed=1)[0], SyntheticPopulation(5_000, seed=1)[0]
    c = SyntheticPopulation(5_000, seed=2)[0]
    for rel in a.relations:
        assert torch.equal(a.edge_index(rel), b.edge_index(rel))
    assert torch.equal(a["agent"].age, b["agent"].age)
    assert not torch.equal(a.edge_index("community"), c.edge_index("community"))


def test_each_part_has_its_own_random_stream():
    a = SyntheticPopulation(5_000, seed=1)[0]
    b = SyntheticPopulation(5_000, seed=1, enrollment=0.5, school_contacts=10.0)[0]
    assert torch.equal(a.edge_index("community"), b.edge_index("community"))
    assert torch.equal(a.edge_index("household"), b.edge_index("household"))
    assert not torch.equal(a.edge_index("school"), b.edge_index("school"))


def test_cached_on_disk_when_a_root_is_given(tmp_path, monkeypatch):
    first = SyntheticPopulation(2_000, seed=0, root=tmp_path)
    calls = []
    monkeypatch.setattr(SyntheticPopulation, "process", lambda self: calls.append(1))
    second = SyntheticPopulation(2_000, seed=0, root=tmp_path)
    assert not calls
    assert torch.equal(first[0].edge_index("work"), second[0].edge_index("work"))
    with pytest.raises(RuntimeError, match="did not call self.save"):
        SyntheticPopulation(2_000, seed=0, root=tmp_path, work_contacts=8.0)
    assert calls  # a changed argument is processed again


def test_tiny_and_edge_populations():
    graph = SyntheticPopulation(1, seed=0, age_shares=(0, 1, 0, 0, 0, 0, 0, 0))[0]
    assert graph.num_nodes() == 1 and graph.num_edges("household") == 0
    no_work = SyntheticPopulation(500, seed=0, employment_rate=0.0, enrollment=0.0)[0]
    assert no_work.num_edges("work") == 0 and no_work.num_edges("school") == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"age_shares": (0.5, 0.5)}, "8 shares"),
        ({"age_shares": (0.2,) * 8}, "sum to 1"),
        ({"household_sizes": {0: 1.0}}, "household_sizes"),
        ({"enrollment": 1.5}, "probability"),
        ({"work_contacts": float("nan")}, "work_contacts"),
        ({"community_contacts": ((2, 2), (4, -1), (3, 3))}, "community_contacts"),
        ({"colour": "red"}, "unknown SyntheticPopulation argument"),
        ({"age_shares": (1, 0, 0, 0, 0, 0, 0, 0)}, "adult heads"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticPopulation(1_000, **kwargs)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_size(bad):
    with pytest.raises(ValueError, match="num_agents"):
        SyntheticPopulation(bad)


def test_pairs_within_groups_by_hand():
    members = np.array([9, 8, 7, 3, 4, 5, 6, 0])
    sizes = np.array([3, 0, 4, 1])
    u, v = _within_groups(members, sizes, sizes * (sizes - 1) // 2, np.random.default_rng(0))
    assert sorted(zip(u.tolist(), v.tolist())) == sorted(
        [(9, 8), (9, 7), (8, 7), (3, 4), (3, 5), (3, 6), (4, 5), (4, 6), (5, 6)]
    )
    # a group of 10 with degree 4: 20 distinct pairs out of 45; one of 3 with degree 4: all 3
    u, v = _group_contacts(np.arange(13), np.array([10, 3]), 4.0, np.random.default_rng(1))
    pairs = set(zip(u.tolist(), v.tolist()))
    assert len(pairs) == len(u) == 23
    assert {(10, 11), (10, 12), (11, 12)} <= pairs
    assert all(a < b and (a < 10) == (b < 10) for a, b in pairs)


def test_places_as_nodes(population):
    out = PlacesAsNodes()(population)
    assert ("agent", "household", "agent") in population.relations  # input untouched
    assert ("agent", "household", "agent") not in out.relations
    assert ("agent", "community", "agent") in out.relations
    households = out.num_nodes("household")
    assert households == population.meta["num_households"]
    # two hops agent -> household -> agent = household contacts plus each agent itself
    import scipy.sparse as sp

    member = out.to_scipy(("agent", "member_of", "household"))  # [households, agents]
    two_hop = (member.T @ member).tocsr()
    clique = population.to_scipy("household") + sp.identity(N, format="csr")
    assert (two_hop != clique).nnz == 0
    with pytest.raises(ValueError, match="place ids"):
        PlacesAsNodes(places=("church",))(population)


def test_places_as_nodes_can_keep_the_contacts(population):
    out = PlacesAsNodes(places=("household",), drop_contacts=False)(population)
    assert out.num_nodes("household") == population.meta["num_households"]
    assert out.num_edges(("agent", "household", "agent")) == population.num_edges("household")
    assert out.num_edges(("agent", "member_of", "household")) == N
