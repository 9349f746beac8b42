"""Protocol layers (message passing over population graphs) and differentiable samplers."""

from .hetero import HeteroLayer
from .protocol import ProtocolLayer
from .samplers import RandomStreams, bernoulli_st, categorical_st
from .transmission import Transmission

__all__ = [
    "HeteroLayer",
    "ProtocolLayer",
    "RandomStreams",
    "Transmission",
    "bernoulli_st",
    "categorical_st",
]
