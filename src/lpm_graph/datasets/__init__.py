"""Population datasets, generators and bundled real data."""

from .bundled import hampshire_contact_network
from .generators import complete_graph, erdos_renyi

__all__ = ["complete_graph", "erdos_renyi", "hampshire_contact_network"]
