"""Bad input to the datasets and graph generators: a ValueError naming the argument, the
value and the fix, raised before anything is built or read; sizes beyond memory refused with
the estimate. Table-driven: each case is the call, the error class and a phrase."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lpm_graph.datasets import (
    Compose,
    CountySeries,
    MassachusettsCounty,
    PlacesAsNodes,
    PopulationSpec,
    Series,
    StateILI,
    SyntheticPopulation,
    complete_graph,
    configuration_model,
    default_root,
    erdos_renyi,
    population_statistics,
    stochastic_block_model,
    watts_strogatz,
)

nan = math.nan
SHARES = (-0.1, 0.3, 0.1, 0.1, 0.1, 0.2, 0.2, 0.1)

CASES = [
    # (id, call, error class, phrase)
    (
        "erdos_renyi num_nodes negative",
        lambda: erdos_renyi(-1, 3.0),
        ValueError,
        "num_nodes must be a positive int, got -1",
    ),
    (
        "erdos_renyi num_nodes a float",
        lambda: erdos_renyi(10.5, 3.0),
        ValueError,
        "num_nodes must be a positive int, got 10.5",
    ),
    (
        "erdos_renyi mean_degree negative",
        lambda: erdos_renyi(10, -1.0),
        ValueError,
        "mean_degree must be in [0, num_nodes - 1] = [0, 9], got -1.0",
    ),
    ("erdos_renyi mean_degree NaN", lambda: erdos_renyi(10, nan), ValueError, "got nan"),
    (
        "erdos_renyi mean_degree a str",
        lambda: erdos_renyi(10, "3"),
        ValueError,
        "mean_degree must be in",
    ),
    ("erdos_renyi mean_degree above n - 1", lambda: erdos_renyi(10, 20.0), ValueError, "got 20.0"),
    (
        "erdos_renyi beyond memory",
        lambda: erdos_renyi(10**12, 10.0),
        ValueError,
        "erdos_renyi with 1,000,000,000,000 nodes",
    ),
    (
        "erdos_renyi seed negative",
        lambda: erdos_renyi(10, 2.0, seed=-1),
        ValueError,
        "seed must be a non-negative int, got -1",
    ),
    (
        "watts_strogatz odd k",
        lambda: watts_strogatz(10, 3, 0.1),
        ValueError,
        "k must be even and non-negative",
    ),
    (
        "watts_strogatz p 2",
        lambda: watts_strogatz(10, 2, 2.0),
        ValueError,
        "p must be a probability in [0, 1]",
    ),
    (
        "watts_strogatz k >= n",
        lambda: watts_strogatz(4, 6, 0.1),
        ValueError,
        "k must be less than num_nodes = 4",
    ),
    (
        "watts_strogatz beyond memory",
        lambda: watts_strogatz(10**12, 10, 0.1),
        ValueError,
        "GiB and this machine has",
    ),
    (
        "complete_graph beyond memory",
        lambda: complete_graph(10**7),
        ValueError,
        "choose fewer nodes",
    ),
    (
        "complete_graph num_nodes 0",
        lambda: complete_graph(0),
        ValueError,
        "num_nodes must be a positive int, got 0",
    ),
    (
        "configuration_model a negative degree",
        lambda: configuration_model([1, -1, 2]),
        ValueError,
        "degrees must be non-negative, got -1 at index 1",
    ),
    (
        "configuration_model fractional degrees",
        lambda: configuration_model([1.5, 2.5]),
        ValueError,
        "degrees must hold whole numbers",
    ),
    (
        "configuration_model an odd degree sum",
        lambda: configuration_model([1, 1, 1]),
        ValueError,
        "an odd number of stubs",
    ),
    (
        "configuration_model nothing",
        lambda: configuration_model(),
        ValueError,
        "needs degrees, or both num_nodes and distribution",
    ),
    (
        "stochastic_block_model probabilities above 1",
        lambda: stochastic_block_model([5, 5], [[1.5, 0.1], [0.1, 0.5]]),
        ValueError,
        "edge_probs must hold probabilities in [0, 1]",
    ),
    (
        "stochastic_block_model of the wrong shape",
        lambda: stochastic_block_model([5, 5], [[0.5]]),
        ValueError,
        "edge_probs must be a [2, 2] matrix",
    ),
    (
        "stochastic_block_model asymmetric",
        lambda: stochastic_block_model([5, 5], [[0.5, 0.1], [0.2, 0.5]]),
        ValueError,
        "edge_probs must be symmetric",
    ),
    (
        "stochastic_block_model a negative block",
        lambda: stochastic_block_model([5, -5], [[0.5, 0.1], [0.1, 0.5]]),
        ValueError,
        "block_sizes must be non-negative",
    ),
    (
        "SyntheticPopulation 0 agents",
        lambda: SyntheticPopulation(0),
        ValueError,
        "num_agents must be a positive int, got 0",
    ),
    (
        "SyntheticPopulation a float size",
        lambda: SyntheticPopulation(100.0),
        ValueError,
        "num_agents must be a positive int, got 100.0",
    ),
    (
        "SyntheticPopulation seed negative",
        lambda: SyntheticPopulation(50, seed=-1),
        ValueError,
        "seed must be a non-negative int, got -1",
    ),
    (
        "SyntheticPopulation a misspelt argument",
        lambda: SyntheticPopulation(50, school_sise=3),
        ValueError,
        "unknown SyntheticPopulation argument(s) ['school_sise']",
    ),
    (
        "SyntheticPopulation spec a dict",
        lambda: SyntheticPopulation(50, spec={"enrollment": 0.5}),
        ValueError,
        "spec must be a PopulationSpec or None, got dict",
    ),
    (
        "PopulationSpec 3 age shares",
        lambda: PopulationSpec(age_shares=(0.5, 0.5, 0.0)),
        ValueError,
        "age_shares needs 8 shares",
    ),
    (
        "PopulationSpec a negative age share",
        lambda: PopulationSpec(age_shares=SHARES),
        ValueError,
        "age_shares must be finite and non-negative",
    ),
    (
        "PopulationSpec household size 0",
        lambda: PopulationSpec(household_sizes={0: 1.0}),
        ValueError,
        "household_sizes must map sizes >= 1",
    ),
    (
        "PopulationSpec enrollment 2",
        lambda: PopulationSpec(enrollment=2.0),
        ValueError,
        "enrollment is a probability in [0, 1], got 2.0",
    ),
    (
        "PopulationSpec enrollment a str",
        lambda: PopulationSpec(enrollment="0.9"),
        ValueError,
        "enrollment is a probability in [0, 1], got '0.9'",
    ),
    (
        "PopulationSpec school_size a str",
        lambda: PopulationSpec(school_size="500"),
        ValueError,
        "school_size must be a positive number, got '500'",
    ),
    (
        "PopulationSpec school_ages of strs",
        lambda: PopulationSpec(school_ages=("5", "17")),
        ValueError,
        "school_ages must be (first, last) within 0..89",
    ),
    (
        "PopulationSpec max_workplace_size NaN",
        lambda: PopulationSpec(max_workplace_size=nan),
        ValueError,
        "max_workplace_size must be >= 1, got nan",
    ),
    (
        "PopulationSpec community_contacts of the wrong shape",
        lambda: PopulationSpec(community_contacts=((1.0, 1.0),)),
        ValueError,
        "community_contacts needs (mean, sd) >= 0",
    ),
    (
        "Series days out of order",
        lambda: Series("x", torch.tensor([0, 2, 1]), torch.zeros(3, 1), ("a",)),
        ValueError,
        "mark missing rows with NaN values",
    ),
    (
        "Series values of the wrong shape",
        lambda: Series("x", torch.arange(3), torch.zeros(4, 1), ("a",)),
        ValueError,
        "expected days [T] and values [T, 1]",
    ),
    (
        "Series an unknown frequency",
        lambda: Series("x", torch.arange(3), torch.zeros(3, 1), ("a",), "monthly"),
        ValueError,
        "frequency must be one of ('daily', 'weekly'), got 'monthly'",
    ),
    (
        "Series fractional days",
        lambda: Series("x", torch.tensor([0.5, 1.5]), torch.zeros(2, 1), ("a",)),
        ValueError,
        "days must be whole days since 1970-01-01",
    ),
    (
        "Series columns a str",
        lambda: Series("x", torch.arange(3), torch.zeros(3, 2), "ab"),
        ValueError,
        "write columns=('ab',)",
    ),
    (
        "Series values of strs",
        lambda: Series("x", torch.arange(3), [["a"]] * 3, ("a",)),
        ValueError,
        "days and values must be numeric arrays",
    ),
    (
        "CountySeries an unknown county",
        lambda: CountySeries(False, counties=["99999"]),
        ValueError,
        "counties: unknown ['99999']",
    ),
    (
        "CountySeries an unknown column",
        lambda: CountySeries(False, columns=["flu"]),
        ValueError,
        "columns: unknown ['flu']",
    ),
    (
        "CountySeries smoothing 0",
        lambda: CountySeries(False, smoothing=0),
        ValueError,
        "smoothing must be None or a window of >= 1 days, got 0",
    ),
    (
        "CountySeries an unknown frequency",
        lambda: CountySeries(False, frequency="hourly"),
        ValueError,
        "frequency must be one of",
    ),
    (
        "CountySeries an unknown split",
        lambda: CountySeries(False, split="dev"),
        ValueError,
        "split must be None or one of ('train', 'val', 'test'), got 'dev'",
    ),
    (
        "CountySeries split_dates reversed",
        lambda: CountySeries(False, split_dates=("2020-11-14", "2020-10-03")),
        ValueError,
        "split_dates: train_end 2020-11-14 must come before",
    ),
    (
        "CountySeries split_dates not dates",
        lambda: CountySeries(False, split_dates=("soon", "later")),
        ValueError,
        "split_dates must be (train_end, val_end)",
    ),
    (
        "CountySeries fill_missing a str",
        lambda: CountySeries(False, fill_missing="zero"),
        ValueError,
        "fill_missing must be None (keep NaN) or a number",
    ),
    (
        "CountySeries root an int",
        lambda: CountySeries(5),
        ValueError,
        "root must be a folder (str or Path), None (the default cache) or False",
    ),
    ("CountySeries root True", lambda: CountySeries(True), ValueError, "got True"),
    (
        "CountySeries transform not callable",
        lambda: CountySeries(False, transform=5),
        ValueError,
        "transform must be a callable (item -> item) or None, got 5",
    ),
    (
        "StateILI an unknown region",
        lambda: StateILI(False, regions=["ZZ"]),
        ValueError,
        "regions: unknown ['ZZ']",
    ),
    (
        "MassachusettsCounty an unknown county",
        lambda: MassachusettsCounty(False, county="99999"),
        ValueError,
        "county '99999' has no bundled agents",
    ),
    (
        "PlacesAsNodes places a str",
        lambda: PlacesAsNodes(places="household"),
        ValueError,
        "write places=['household']",
    ),
    (
        "PlacesAsNodes a place the agents lack",
        lambda: PlacesAsNodes(places=["church"])(erdos_renyi(10, 2.0)),
        ValueError,
        "the agents have no ['church'] attribute",
    ),
    (
        "Compose one transform, not a list",
        lambda: Compose(lambda g: g),
        ValueError,
        "wrap a single transform: Compose([t])",
    ),
    (
        "Compose of a number",
        lambda: Compose([1]),
        ValueError,
        "transforms must be callables (graph -> graph), got 1",
    ),
    ("default_root empty", lambda: default_root(""), ValueError, "name must be one folder name"),
    (
        "default_root a path out of the cache",
        lambda: default_root("../x"),
        ValueError,
        "got '../x'",
    ),
    (
        "population_statistics of None",
        lambda: population_statistics(None),
        ValueError,
        "graph must be a synthetic population",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_dataset_input_is_a_clear_error(call, error, phrase):
    with pytest.raises(error) as raised:
        call()
    assert phrase in str(raised.value)


def test_numpy_sizes_are_accepted():
    assert SyntheticPopulation(np.int64(60))[0].num_nodes() == 60
    assert erdos_renyi(np.int64(10), 2.0).num_nodes() == 10
