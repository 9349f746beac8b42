"""Population datasets, generators and bundled real data."""

from .base import Dataset, default_root
from .bundled import MassachusettsCounty, hampshire_contact_network
from .generators import (
    complete_graph,
    configuration_model,
    erdos_renyi,
    stochastic_block_model,
    watts_strogatz,
)
from .series import CountySeries, Series, StateILI

__all__ = [
    "CountySeries",
    "Dataset",
    "MassachusettsCounty",
    "Series",
    "StateILI",
    "complete_graph",
    "configuration_model",
    "default_root",
    "erdos_renyi",
    "hampshire_contact_network",
    "stochastic_block_model",
    "watts_strogatz",
]
