"""lpm-graph: Large Population Models as message passing over population graphs."""

from .graph import PopulationGraph
from .layers import HeteroLayer, ProtocolLayer
from .simulator import Simulator, Trajectory, simulate

__version__ = "0.1.0"

__all__ = [
    "HeteroLayer",
    "PopulationGraph",
    "ProtocolLayer",
    "Simulator",
    "Trajectory",
    "__version__",
    "simulate",
]
