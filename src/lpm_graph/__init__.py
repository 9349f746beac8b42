"""lpm-graph: Large Population Models as message passing over population graphs."""

from .graph import PopulationGraph
from .layers import HeteroLayer, ProtocolLayer
from .protocols.compose import Compose
from .simulator import RunOptions, Simulator, Trajectory, simulate

__version__ = "0.1.0"

__all__ = [
    "Compose",
    "HeteroLayer",
    "PopulationGraph",
    "ProtocolLayer",
    "RunOptions",
    "Simulator",
    "Trajectory",
    "__version__",
    "simulate",
]
