"""A simulator as a forecasting model: parameters in, daily series of observables out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .._checks import check_number
from ..graph import PopulationGraph
from ..protocols.base import Protocol
from ..simulator import Simulator, Trajectory

__all__ = ["ParameterSet", "SimulatorModel"]


class ParameterSet(nn.ModuleDict):
    """Named parameter modules (:class:`~lpm_graph.train.Bounded`, ``Weekly``, ...);
    calling it returns ``{name: module()}``."""

    def __init__(self, modules: Mapping[str, nn.Module] | None = None) -> None:
        for name, module in (modules or {}).items():
            if not isinstance(module, nn.Module):
                raise ValueError(
                    f"ParameterSet[{name!r}] must be a parameter module, e.g. "
                    f"Bounded({module!r}, low, high) or Positive({module!r}), got "
                    f"{type(module).__name__}."
                )
        super().__init__(modules)

    def forward(self) -> dict[str, Tensor]:  # type: ignore[override]
        return {name: module() for name, module in self.items()}


class SimulatorModel(nn.Module):
    """A protocol on a graph, driven by learnable parameters, returning daily observables.

    ``model()`` sets each protocol parameter named by ``parameters()`` (e.g.
    ``reproduction_number`` per step from a :class:`~lpm_graph.train.Weekly`, ``mortality``
    from a :class:`~lpm_graph.train.Bounded`, or all of them from a
    :class:`~lpm_graph.train.CalibNN`), runs ``steps`` steps and returns
    ``{observable: [steps]}`` for each flow in ``outputs`` (e.g. ``"deaths"``), multiplied
    by ``scale`` (population of the place / agents simulated). Every model of
    :mod:`lpm_graph.train` (baselines included) has this interface, so the
    :class:`~lpm_graph.train.Trainer` and the metrics treat them alike.

    The protocol's own values of the driven parameters are replaced at every call; build it
    with ``learnable=False`` so that only ``parameters`` are trained.

    Args:
        protocol: the simulation step (e.g. ``SEIRM(learnable=False)``).
        graph: the population.
        steps: days (steps) simulated from the first observed day.
        parameters: a module whose call returns ``{protocol attribute: tensor}``.
        initial_infected: as for :func:`lpm_graph.simulate` (a count, ids, a mask or
            per-agent probabilities), or a module returning per-agent probabilities or one
            probability for every agent (e.g. ``Bounded(0.001, 1e-5, 0.05)``: learnable).
        outputs: flow names returned (``"deaths"``, ``"infections"``, ``"onsets"``, ...),
            or ``{name: fn}`` with ``fn(trajectory)`` a daily series (``[T]``, ``[T, R]``
            with replicates) computed from the run, e.g. the expected deaths given the exits
            from I, ``lambda tr: protocol.mortality * (tr.flows["recoveries"] +
            tr.flows["deaths"])`` (SEIRM with one mortality): the same expectation as the
            deaths, and with ``"stochastic_derivative"`` gradients of far lower variance
            (standard errors 5-17x smaller for d deaths / d weekly R on a 2,000-agent graph).
        mode: ``"expected"`` (deterministic, exact gradients; default) or ``"stochastic"``.
        seed: seed of stochastic runs (``model(seed=...)`` overrides it per call).
        replicates: stochastic replicates averaged in the output.
        scale: multiplies every output (e.g. county population / simulated agents).
        estimator: gradient estimator of stochastic runs (see :class:`~lpm_graph.Simulator`).
            With ``"stochastic_derivative"`` each day's value is read through
            :meth:`~lpm_graph.simulator.Trajectory.expectation`: its value is the run's and
            its gradient the unbiased estimate of ``grad E[value]``, so the gradient of any
            *linear* function of the series (a total, a weighted sum, a replicate mean) is
            unbiased; that of a nonlinear one (a squared error) is not.
        alternatives: coupled alternative paths per replicate of the
            ``"stochastic_derivative"`` estimator (more: lower-variance gradients).
    """

    def __init__(
        self,
        protocol: Protocol,
        graph: PopulationGraph,
        steps: int,
        parameters: nn.Module,
        *,
        initial_infected: object = 0.01,
        outputs: Sequence[str] | Mapping[str, Callable[[Trajectory], Tensor]] = ("deaths",),
        mode: str = "expected",
        seed: int = 0,
        replicates: int | None = None,
        scale: float = 1.0,
        estimator: str = "straight_through",
        alternatives: int = 1,
    ) -> None:
        super().__init__()
        if not callable(parameters):
            raise ValueError("parameters must be a module returning {name: tensor}.")
        if not isinstance(graph, PopulationGraph):
            raise ValueError(
                f"graph must be a lpm_graph.PopulationGraph, got {type(graph).__name__}."
            )
        if isinstance(outputs, str) or not isinstance(outputs, Sequence | Mapping) or not outputs:
            hint = f"; write outputs=[{outputs!r}]" if isinstance(outputs, str) else ""
            raise ValueError(
                f"outputs must be a non-empty list of flow names or a {{name: fn}} mapping, got "
                f"{outputs!r}{hint}."
            )
        scale = check_number(scale, "scale", 0, open_low=True)
        self.params = parameters
        self.simulator = Simulator(
            protocol,
            steps,
            mode=mode,  # type: ignore[arg-type]
            estimator=estimator,  # type: ignore[arg-type]
            alternatives=alternatives,
        )
        self.graph = graph
        self.outputs = tuple(outputs)
        self._observables = dict(outputs) if isinstance(outputs, Mapping) else {}
        self.initial_infected = initial_infected
        self.seed = seed
        self.replicates = replicates
        self.scale = float(scale)
        # The driven protocol attributes are overwritten at every call from `parameters`, with
        # shapes of their own (a [T] schedule for a scalar R), so they are not state: keep them
        # out of the state_dict, else a called model's state_dict fits no freshly built one.
        with torch.no_grad():
            driven = list(parameters())
        for name in driven:
            if name in self.protocol._buffers:
                buffer = self.protocol._buffers[name]
                self.protocol.register_buffer(name, buffer, persistent=False)

    @property
    def protocol(self) -> Protocol:
        return self.simulator.protocol

    @property
    def steps(self) -> int:
        return self.simulator.steps

    def forward(self, seed: int | None = None) -> dict[str, Tensor]:
        values = self.params()
        for name, value in values.items():
            if not hasattr(self.protocol, name):
                raise ValueError(
                    f"{type(self.protocol).__name__} has no parameter {name!r}; the parameter "
                    "modules must be named after protocol attributes."
                )
            if name in self.protocol._parameters:
                raise ValueError(
                    f"{type(self.protocol).__name__}.{name} is a learnable nn.Parameter of the "
                    "protocol itself; build the protocol with learnable=False so that only the "
                    "calibration parameters are trained."
                )
            setattr(self.protocol, name, value)
        initial = self.initial_infected
        if isinstance(initial, nn.Module):
            initial = initial()
            if initial.dim() == 0:  # one probability for every agent
                initial = initial.expand(self.graph.num_nodes(self.protocol.node_type))
        traj = self.simulator(
            self.graph,
            initial_infected=initial,
            seed=self.seed if seed is None else seed,
            replicates=self.replicates,
        )
        out = {}
        for name in self.outputs:
            observe = self._observables.get(name)
            if observe is None:
                if name not in traj.flows:
                    raise ValueError(
                        f"output {name!r} is not a flow of {type(self.protocol).__name__}; "
                        f"choose from {sorted(traj.flows)}."
                    )
                observe = _flow(name)
            series = observe(traj)
            if traj.coupled is not None:  # gradients through the coupled alternative paths
                series = torch.stack(
                    [
                        traj.expectation(lambda tr, d=d, f=observe: f(tr)[d])
                        for d in range(len(series))
                    ]
                )
            if series.dim() > 1:  # replicates: their mean
                series = series.mean(dim=-1)
            out[name] = series * self.scale
        return out

    def values(self) -> Mapping[str, Tensor]:
        """The current parameter values (detached), for reports."""
        with torch.no_grad():
            return {k: v.detach().clone() for k, v in self.params().items()}


def _flow(name: str) -> Callable[[Trajectory], Tensor]:
    return lambda tr: tr.flows[name]
