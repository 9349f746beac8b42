"""Interaction protocols built from protocol layers."""

from .base import CompartmentalProtocol, Phase, Port, Protocol, StepContext
from .behaviour import BehaviourCoupling
from .compose import Compose, Link, NamespacedStreams, Protection, SlotSum, epidemic_economy
from .durations import Duration, infectiousness_kernel
from .interventions import (
    EdgeTypeClosure,
    Intervention,
    Isolation,
    Schedule,
    Testing,
    Vaccination,
)
from .labour import LABOUR_FORCE_AGES, LabourMarket, add_labour_attributes, labour_population
from .opinion import (
    Behaviour,
    BoundedConfidence,
    ConfidenceAverage,
    NeighbourFraction,
    ThresholdAdoption,
)
from .progression import COVASIM_PROGNOSES, Progression, StagedSEIRM, Transition
from .seirm import AGE_GROUPS, GRADABM_SUSCEPTIBILITY, SEIRM
from .sir import SIR, Infection, Recovery
from .supply_chain import (
    CapacityShock,
    SupplyChain,
    firm_graph,
    firm_network,
    sector_values,
    steady_output,
)

__all__ = [
    "Compose",
    "Link",
    "NamespacedStreams",
    "Protection",
    "SlotSum",
    "epidemic_economy",
    "CapacityShock",
    "SupplyChain",
    "firm_graph",
    "firm_network",
    "sector_values",
    "steady_output",
    "Behaviour",
    "BehaviourCoupling",
    "BoundedConfidence",
    "ConfidenceAverage",
    "NeighbourFraction",
    "ThresholdAdoption",
    "AGE_GROUPS",
    "COVASIM_PROGNOSES",
    "GRADABM_SUSCEPTIBILITY",
    "LABOUR_FORCE_AGES",
    "LabourMarket",
    "add_labour_attributes",
    "labour_population",
    "SEIRM",
    "SIR",
    "Progression",
    "StagedSEIRM",
    "Transition",
    "Duration",
    "EdgeTypeClosure",
    "Intervention",
    "Isolation",
    "Schedule",
    "Testing",
    "Vaccination",
    "infectiousness_kernel",
    "CompartmentalProtocol",
    "Infection",
    "Phase",
    "Port",
    "Protocol",
    "Recovery",
    "StepContext",
]
