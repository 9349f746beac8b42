"""Population datasets (PyG-style), generators, transforms and bundled real data."""

from .base import Dataset, default_root
from .bundled import MassachusettsCounty, franklin_contact_network, hampshire_contact_network
from .generators import (
    complete_graph,
    configuration_model,
    erdos_renyi,
    stochastic_block_model,
    watts_strogatz,
)
from .series import CountySeries, Series, StateILI
from .synthetic import PopulationSpec, SyntheticPopulation, population_statistics
from .transforms import Compose, PlacesAsNodes

__all__ = [
    "Compose",
    "CountySeries",
    "Dataset",
    "MassachusettsCounty",
    "PlacesAsNodes",
    "PopulationSpec",
    "Series",
    "StateILI",
    "SyntheticPopulation",
    "complete_graph",
    "configuration_model",
    "default_root",
    "erdos_renyi",
    "franklin_contact_network",
    "hampshire_contact_network",
    "population_statistics",
    "stochastic_block_model",
    "watts_strogatz",
]
