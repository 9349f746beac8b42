"""Training and calibration: learnable parameters, simulators as models, trainers, baselines."""

from .calibnn import CalibNN
from .metrics import forecast_metrics, mae, metrics_table, nd, rmse
from .model import ParameterSet, SimulatorModel
from .parameters import Bounded, Positive, Weekly
from .plot import plot_forecast
from .trainer import LOSSES, History, Trainer

__all__ = [
    "Bounded",
    "CalibNN",
    "History",
    "LOSSES",
    "ParameterSet",
    "Positive",
    "SimulatorModel",
    "Trainer",
    "Weekly",
    "forecast_metrics",
    "mae",
    "metrics_table",
    "nd",
    "plot_forecast",
    "rmse",
]
