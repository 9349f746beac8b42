"""Interaction protocols built from protocol layers."""

from .base import CompartmentalProtocol, Phase, Protocol, StepContext
from .sir import SIR, Infection, Recovery

__all__ = [
    "SIR",
    "CompartmentalProtocol",
    "Infection",
    "Phase",
    "Protocol",
    "Recovery",
    "StepContext",
]
