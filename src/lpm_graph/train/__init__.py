"""Training and calibration: learnable parameters, simulators as models, trainers, baselines."""

from .calibnn import CalibNN
from .model import ParameterSet, SimulatorModel
from .parameters import Bounded, Positive, Weekly

__all__ = ["Bounded", "CalibNN", "ParameterSet", "Positive", "SimulatorModel", "Weekly"]
