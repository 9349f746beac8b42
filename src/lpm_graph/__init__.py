"""lpm-graph: Large Population Models as message passing over population graphs."""

from ._mkl import warm_up as _warm_up
from .graph import PopulationGraph
from .layers import HeteroLayer, ProtocolLayer
from .protocols.compose import Compose
from .simulator import RunOptions, Simulator, Trajectory, simulate

__version__ = "0.1.0"

_warm_up()  # MKL's first call of a math kernel on two threads can round differently

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
