"""Training and calibration: learnable parameters, simulators as models, trainers, baselines."""

from .model import ParameterSet, SimulatorModel
from .parameters import Bounded, Positive, Weekly

__all__ = ["Bounded", "ParameterSet", "Positive", "SimulatorModel", "Weekly"]
