"""Training and calibration: learnable parameters, simulators as models, trainers, baselines."""

from .baselines import SEIRMODE, GradientFreeResult, calibrate_gradient_free
from .calibnn import CalibNN
from .forecast import ForecastConfig, ForecastResult, plot_forecasts, rolling_forecast
from .losses import log_mse, normalized_mse
from .metrics import forecast_metrics, mae, metrics_table, nd, rmse
from .model import ParameterSet, SimulatorModel
from .parameters import Bounded, Positive, Weekly
from .plot import plot_forecast
from .regional import RegionalCalibNN, RegionalODE, RegionalSEIRM, disjoint_union
from .sensitivity import (
    Contributions,
    FiniteDifference,
    contributions,
    finite_difference,
    hessian_vector_product,
    sensitivity,
)
from .trainer import LOSSES, History, Trainer

__all__ = [
    "Bounded",
    "CalibNN",
    "Contributions",
    "FiniteDifference",
    "ForecastConfig",
    "ForecastResult",
    "History",
    "LOSSES",
    "ParameterSet",
    "Positive",
    "RegionalCalibNN",
    "RegionalODE",
    "RegionalSEIRM",
    "SEIRMODE",
    "GradientFreeResult",
    "SimulatorModel",
    "Trainer",
    "Weekly",
    "calibrate_gradient_free",
    "contributions",
    "disjoint_union",
    "finite_difference",
    "forecast_metrics",
    "hessian_vector_product",
    "log_mse",
    "mae",
    "metrics_table",
    "nd",
    "normalized_mse",
    "plot_forecast",
    "plot_forecasts",
    "rmse",
    "rolling_forecast",
    "sensitivity",
]
