"""Simulator: unroll a protocol's step over T steps, like a T-layer GNN forward pass."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from .layers.samplers import RandomStreams
from .protocols.base import ESTIMATORS, MODES, Estimator, Mode, Protocol, State

if TYPE_CHECKING:
    import pandas as pd

    from .graph import PopulationGraph

__all__ = ["Simulator", "Trajectory", "simulate"]

logger = logging.getLogger(__name__)


@dataclass
class Trajectory:
    """The per-step observables of one run.

    Attributes:
        counts: per compartment, the number of agents (expected number in expected-value mode)
            at ``t = 0, dt, ..., T dt``: tensors ``[T + 1]`` (``[T + 1, R]`` with replicates).
        flows: per flow (``"infections"``, ``"recoveries"``, ...), the number of agents that
            moved during each step: tensors ``[T]`` (``[T, R]``).
        final_state: the per-agent state after the last step.
        states: every per-agent state (``T + 1`` dicts) when the run was asked to keep them.
        dt: step length.
    """

    counts: dict[str, Tensor]
    flows: dict[str, Tensor]
    final_state: dict[str, Tensor]
    dt: float
    states: list[dict[str, Tensor]] | None = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        return next(iter(self.counts.values())).shape[0] - 1

    @property
    def times(self) -> Tensor:
        return torch.arange(self.steps + 1, dtype=torch.float64) * self.dt

    def to_dataframe(self) -> pd.DataFrame:
        """Long-format table: one row per step (and replicate), one column per observable."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                "Trajectory.to_dataframe needs pandas; install it with `pip install pandas`."
            ) from err
        columns: dict[str, Any] = {"t": self.times.numpy()}
        for name, value in self.counts.items():
            columns[name] = value.detach().cpu().numpy()
        for name, value in self.flows.items():
            pad = torch.cat([value.new_full((1, *value.shape[1:]), float("nan")), value])
            columns[f"new_{name}"] = pad.detach().cpu().numpy()
        first = next(iter(self.counts.values()))
        if first.dim() == 1:
            return pd.DataFrame(columns)
        reps = first.shape[1]
        frames = []
        for k in range(reps):
            frame = {n: (v if n == "t" else v[:, k]) for n, v in columns.items()}
            frames.append(pd.DataFrame({"replicate": k, **frame}))
        return pd.concat(frames, ignore_index=True)

    def __repr__(self) -> str:
        final = ", ".join(f"{k}={_fmt(v[-1])}" for k, v in self.counts.items())
        return f"Trajectory(steps={self.steps}, dt={self.dt:g}, final: {final})"


def _fmt(value: Tensor) -> str:
    return f"{value.item():g}" if value.numel() == 1 else f"<{value.numel()} replicates>"


class Simulator(nn.Module):
    """Unrolls ``protocol.step`` for ``steps`` steps and records per-step observables.

    The simulator is an ``nn.Module`` whose parameters are the protocol's, so ``.parameters()``,
    ``.to()``, optimisers and ``state_dict`` work as for any model. A run keeps only the
    observables (counts per compartment, flows per step) unless ``record_states=True``.

    Args:
        protocol: the step (a :class:`~lpm_graph.protocols.base.Protocol`, e.g. ``SIR``).
        steps: number of steps ``T``.
        mode: ``"stochastic"`` (exact draws, straight-through gradients; default) or
            ``"expected"`` (per-agent probabilities, deterministic, exact gradients).
        checkpoint: if set, recompute the forward of every ``checkpoint`` consecutive steps during
            backward instead of storing it, so backward memory grows with ``T / checkpoint``
            states rather than with every intermediate of every step. Draws are keyed by
            ``(seed, phase, step)``, so the recomputation replays the same numbers.
        record_states: keep every per-agent state in the trajectory.
        progress: show a tqdm progress bar.
        estimator: gradient estimator of the stochastic draws (``"straight_through"``, default,
            or ``"conditional_mean"``; see :data:`lpm_graph.protocols.base.ESTIMATORS`).
    """

    def __init__(
        self,
        protocol: Protocol,
        steps: int,
        *,
        mode: Mode = "stochastic",
        checkpoint: int | None = None,
        record_states: bool = False,
        progress: bool = False,
        estimator: Estimator = "straight_through",
    ) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator={estimator!r} is not known; choose one of {ESTIMATORS}.")
        self.estimator: Estimator = estimator
        if not isinstance(protocol, Protocol):
            raise ValueError(
                f"protocol must be a lpm_graph Protocol (e.g. lpm_graph.protocols.SIR), got "
                f"{type(protocol).__name__}."
            )
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}.")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not a simulation mode; choose one of {MODES}.")
        if checkpoint is not None and (not isinstance(checkpoint, int) or checkpoint < 1):
            raise ValueError(
                f"checkpoint must be None or a positive number of steps, got {checkpoint!r}."
            )
        self.protocol = protocol
        self.steps = steps
        self.mode: Mode = mode
        self.checkpoint = checkpoint
        self.record_states = record_states
        self.progress = progress

    def forward(
        self,
        graph: PopulationGraph,
        state: Mapping[str, Tensor] | None = None,
        *,
        initial_infected: object = None,
        seed: int = 0,
        replicates: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> Trajectory:
        """Run on ``graph`` from ``state`` (or from ``initial_infected``) with ``seed``.

        Args:
            graph: the population graph; the run happens on its device.
            state: an initial per-agent state; otherwise built from ``initial_infected``.
            initial_infected: see :func:`lpm_graph.protocols.base.seed_infected`.
            seed: the run's seed; the same seed on the same device gives bit-identical results.
            replicates: run ``R`` independent replicates at once as extra state columns.
            dtype: floating dtype of the state (default: ``torch.get_default_dtype()``).
        """
        if replicates is not None and (not isinstance(replicates, int) or replicates < 1):
            raise ValueError(f"replicates must be None or a positive int, got {replicates!r}.")
        dtype = dtype or torch.get_default_dtype()
        self.protocol.check(graph)
        streams = RandomStreams(seed, graph.device)
        if state is None:
            state = self.protocol.initial_state(
                graph, initial_infected, streams, replicates, dtype, self.mode
            )
        else:
            state = dict(state)
        names = list(state)
        observed = [self.protocol.observe(state)]
        flows: list[dict[str, Tensor]] = []
        states = [state] if self.record_states else None
        bar = _progress(self.steps) if self.progress else None
        t = 0
        chunk = self.checkpoint or 1
        use_checkpoint = self.checkpoint is not None and torch.is_grad_enabled()
        while t < self.steps:
            n = min(chunk, self.steps - t)
            if use_checkpoint:
                state, obs, fl, kept = self._checkpointed(graph, state, names, t, n, streams)
            else:
                state, obs, fl, kept = self._run(graph, state, t, n, streams)
            observed += obs
            flows += fl
            if states is not None:
                states += kept
            t += n
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()
        counts = {k: torch.stack([o[k] for o in observed]) for k in names}
        flow_names = list(flows[0]) if flows else []
        flow_series = {k: torch.stack([f[k] for f in flows]) for k in flow_names}
        return Trajectory(counts, flow_series, state, self.protocol.dt, states)

    def _run(
        self, graph: PopulationGraph, state: State, t0: int, n: int, streams: RandomStreams
    ) -> tuple[State, list[dict[str, Tensor]], list[dict[str, Tensor]], list[State]]:
        observed, flows, kept = [], [], []
        for t in range(t0, t0 + n):
            state, step_flows = self.protocol.step(
                graph, state, t, streams, self.mode, self.estimator
            )
            totals = {k: v.sum(0) for k, v in step_flows.items()}
            observed.append(self.protocol.observe(state))
            flows.append(totals)
            if self.record_states:
                kept.append(state)
        return state, observed, flows, kept

    def _checkpointed(
        self,
        graph: PopulationGraph,
        state: State,
        names: list[str],
        t0: int,
        n: int,
        streams: RandomStreams,
    ) -> tuple[State, list[dict[str, Tensor]], list[dict[str, Tensor]], list[State]]:
        layout: dict[str, list[str]] = {}

        def segment(*values: Tensor) -> tuple[Tensor, ...]:
            out, observed, flows, _ = self._run(graph, dict(zip(names, values)), t0, n, streams)
            layout["obs"] = list(observed[0])
            layout["flows"] = list(flows[0])
            flat = [out[k] for k in names]
            flat += [o[k] for o in observed for k in layout["obs"]]
            flat += [f[k] for f in flows for k in layout["flows"]]
            return tuple(flat)

        flat = _checkpoint(
            segment, *[state[k] for k in names], use_reentrant=False, preserve_rng_state=False
        )
        k = len(names)
        state = dict(zip(names, flat[:k]))
        n_obs, n_flow = len(layout["obs"]), len(layout["flows"])
        obs_flat = flat[k : k + n * n_obs]
        flow_flat = flat[k + n * n_obs :]
        observed = [
            dict(zip(layout["obs"], obs_flat[s * n_obs : (s + 1) * n_obs])) for s in range(n)
        ]
        flows = [
            dict(zip(layout["flows"], flow_flat[s * n_flow : (s + 1) * n_flow])) for s in range(n)
        ]
        return state, observed, flows, []

    def extra_repr(self) -> str:
        return f"steps={self.steps}, mode={self.mode!r}, checkpoint={self.checkpoint}"


def _progress(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="simulate")


def simulate(
    protocol: Protocol,
    graph: PopulationGraph,
    steps: int,
    *,
    initial_infected: object = None,
    seed: int = 0,
    state: Mapping[str, Tensor] | None = None,
    mode: Mode = "stochastic",
    replicates: int | None = None,
    checkpoint: int | None = None,
    record_states: bool = False,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    estimator: Estimator = "straight_through",
) -> Trajectory:
    """Run ``protocol`` on ``graph`` for ``steps`` steps; see :class:`Simulator`.

    Example::

        graph = PopulationGraph.from_edge_index(edge_index, num_nodes=1000)
        traj = simulate(SIR(0.3, 0.1), graph, steps=100, initial_infected=10, seed=0)
        traj.counts["I"]  # [101]
    """
    sim = Simulator(
        protocol,
        steps,
        mode=mode,
        checkpoint=checkpoint,
        record_states=record_states,
        progress=progress,
        estimator=estimator,
    )
    return sim(
        graph,
        state,
        initial_infected=initial_infected,
        seed=seed,
        replicates=replicates,
        dtype=dtype,
    )
