"""Simulator: unroll a protocol's step over T steps, like a T-layer GNN forward pass."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from ._checks import check_int, check_memory
from .layers.samplers import RandomStreams
from .ops.reuse import for_run, reuse_in_backward
from .protocols.base import (
    ESTIMATORS,
    MODES,
    Coupling,
    Estimator,
    Mode,
    Protocol,
    State,
    StepContext,
)

if TYPE_CHECKING:
    import pandas as pd

    from .graph import PopulationGraph

__all__ = ["CoupledPaths", "RunOptions", "Simulator", "Trajectory", "simulate"]

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
        coupled: the alternative paths of a ``"stochastic_derivative"`` run (else ``None``).
        replicates: the number of replicate columns (the last dimension of every series), or
            ``None`` for a run without replicates; other extra dimensions are groups (age
            groups, sectors).
        seeds: for an ensemble run, the seed of every replicate column (else ``None``).
    """

    counts: dict[str, Tensor]
    flows: dict[str, Tensor]
    final_state: dict[str, Tensor]
    dt: float
    states: list[dict[str, Tensor]] | None = field(default=None, repr=False)
    coupled: CoupledPaths | None = field(default=None, repr=False)
    replicates: int | None = None
    seeds: tuple[int, ...] | None = None

    def expectation(self, fn: Callable[[Trajectory], Tensor]) -> Tensor:
        """``fn(self)``, differentiable so that its gradient estimates ``grad E[fn]``.

        ``fn`` maps a trajectory to one value per replicate (a scalar without replicates, a
        ``[R]`` tensor with them), e.g. ``lambda tr: tr.counts["R"][-1]``. With the
        ``"straight_through"`` and ``"conditional_mean"`` estimators and in expected mode this is
        ``fn(self)`` itself. With ``"stochastic_derivative"`` the value is still ``fn(self)``
        and the gradient is the unbiased estimate: for each alternative path, chosen among
        all the moves the primal run could have made with probability proportional to their
        rate ``r`` (total ``M``), ``M * (fn(alternative) - fn(primal)) * grad log r``,
        averaged over the alternatives of each replicate.
        """
        value = fn(self)
        if self.coupled is None:
            return value
        c = self.coupled
        alt = fn(c.trajectory)
        columns = value.numel()
        if alt.shape != (c.alternatives * columns,):
            raise ValueError(
                f"fn must return one value per replicate: got shape {tuple(value.shape)} for "
                f"the run and {tuple(alt.shape)} for its {c.alternatives} alternative path(s) "
                "per replicate; reduce over agents and time inside fn, not over replicates "
                "(take the mean of the result instead)."
            )
        delta = alt.detach().reshape(c.alternatives, columns) - value.detach().reshape(1, -1)
        score = (c.log_rate - c.log_rate.detach()).reshape(c.alternatives, columns)
        weight = c.weight.to(delta.dtype).reshape(c.alternatives, columns)
        jump = (weight * delta * score.to(delta.dtype)).mean(0)
        return value + jump.reshape(value.shape)

    def quantiles(self, name: str, q: float | Sequence[float] = (0.05, 0.5, 0.95)) -> Tensor:
        """Quantiles over the replicates of the count or flow ``name`` (uncertainty bands).

        Returns ``[len(q), T + 1, *groups]`` for a count (``[len(q), T, *groups]`` for a flow),
        or without the first dimension for a single ``q``; linear interpolation between
        replicates, as :func:`torch.quantile`. Not differentiable usefully: use it to report.
        """
        if self.replicates is None:
            raise ValueError("quantiles need replicates: run with seed=[...] or replicates=R.")
        series = self.counts.get(name, self.flows.get(name))
        if series is None:
            known = ", ".join([*self.counts, *self.flows])
            raise ValueError(f"no count or flow named {name!r}; this trajectory has: {known}.")
        levels = torch.as_tensor(q, dtype=torch.float64)
        if levels.dim() > 1 or bool(((levels < 0) | (levels > 1) | levels.isnan()).any()):
            raise ValueError(f"q must be a level or a list of levels in [0, 1], got {q!r}.")
        values = series.detach().to(torch.float64)
        return torch.quantile(values, levels.to(values.device), dim=-1)

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
        base = 1 if self.replicates is None else 2  # [T] or [T, R]

        def add(name: str, value: Tensor) -> None:
            value = value.detach().cpu()
            if value.dim() > base:  # a per-group series (by age, by sector): one column each
                for g in range(value.shape[1]):
                    columns[f"{name}_{g}"] = value[:, g].numpy()
            else:
                columns[name] = value.numpy()

        for name, value in self.counts.items():
            add(name, value)
        for name, value in self.flows.items():
            add(
                f"new_{name}",
                torch.cat([value.new_full((1, *value.shape[1:]), float("nan")), value]),
            )
        if self.replicates is None:
            return pd.DataFrame(columns)
        frames = []
        for k in range(self.replicates):
            frame = {n: (v if n == "t" else v[:, k]) for n, v in columns.items()}
            seed = {} if self.seeds is None else {"seed": self.seeds[k]}
            frames.append(pd.DataFrame({"replicate": k, **seed, **frame}))
        return pd.concat(frames, ignore_index=True)

    def __repr__(self) -> str:
        final = ", ".join(f"{k}={_fmt(v[-1], self.replicates)}" for k, v in self.counts.items())
        return f"Trajectory(steps={self.steps}, dt={self.dt:g}, final: {final})"


@dataclass
class CoupledPaths:
    """The alternative paths of a ``"stochastic_derivative"`` run.

    Attributes:
        trajectory: the alternative runs, ``alternatives`` copies of every replicate's columns
            side by side (column ``k * R + r`` is alternative ``k`` of replicate ``r``).
        weight: per alternative column, the total rate ``M`` of all the moves the primal run
            could have made (detached).
        log_rate: per alternative column, ``log r`` of the chosen move (differentiable; ``0``
            where the primal run had no candidate move).
        alternatives: alternatives per replicate.
    """

    trajectory: Trajectory
    weight: Tensor
    log_rate: Tensor
    alternatives: int


def _fmt(value: Tensor, replicates: int | None) -> str:
    if value.numel() == 1:
        return f"{value.item():g}"
    if replicates is not None and value.dim() == 1:
        return f"<{replicates} replicates>"
    return f"<{' x '.join(map(str, value.shape))}>"


@dataclass(frozen=True)
class RunOptions:
    """How a run runs, besides the protocol, the graph and the seed: built and checked once
    (an error names the argument), then passed down unchanged to the simulator, an ensemble's
    batches, a partitioned run's ranks. See :class:`Simulator` for each field.

    Example::

        options = RunOptions(100, mode="expected", checkpoint=10)
        run = Simulator(SIR(0.3, 0.1), options=options)(graph, initial_infected=10)
    """

    steps: int
    mode: Mode = "stochastic"
    checkpoint: int | None = None
    record_states: bool = False
    progress: bool = False
    estimator: Estimator = "straight_through"
    alternatives: int = 1
    reuse_memory: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.reuse_memory, bool):
            raise ValueError(f"reuse_memory must be True or False, got {self.reuse_memory!r}.")
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"estimator={self.estimator!r} is not known; choose one of {ESTIMATORS}."
            )
        if self.estimator == "stochastic_derivative" and self.mode != "stochastic":
            raise ValueError(
                "estimator='stochastic_derivative' differentiates the draws of a stochastic run; "
                f"mode={self.mode!r} has none (its gradients are exact): use mode='stochastic'."
            )
        if self.estimator == "stochastic_derivative" and self.checkpoint is not None:
            raise ValueError(
                "checkpoint= does not apply to estimator='stochastic_derivative': its states "
                "carry no gradient, so there is nothing to recompute; drop checkpoint=."
            )
        object.__setattr__(self, "alternatives", check_int(self.alternatives, "alternatives", 1))
        object.__setattr__(self, "steps", check_int(self.steps, "steps"))
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not a simulation mode; choose one of {MODES}.")
        if self.checkpoint is not None:
            try:
                checkpoint = check_int(self.checkpoint, "checkpoint", 1)
            except ValueError:
                raise ValueError(
                    f"checkpoint must be None or a positive number of steps, got "
                    f"{self.checkpoint!r}."
                ) from None
            object.__setattr__(self, "checkpoint", checkpoint)


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
            states (kept as bool where they hold only 0 and 1, as a stochastic run's
            compartments do) plus one block's intermediates, rather than with every
            intermediate of every step. Draws are keyed by ``(seed, phase, step)``, so the
            recomputation replays the same numbers and the gradients equal those of a run
            without checkpointing bit for bit. Costs one more forward pass, and one host read
            per block (to decide the packing). ``K = 10`` suits ``T = 100`` (memory
            ``~T / K`` states + ``K`` steps of intermediates).
        record_states: keep every per-agent state in the trajectory.
        progress: show a tqdm progress bar.
        estimator: gradient estimator of the stochastic draws (``"straight_through"``, default,
            ``"conditional_mean"`` or ``"stochastic_derivative"``; see
            :data:`lpm_graph.protocols.base.ESTIMATORS`).
        alternatives: with ``"stochastic_derivative"``, the coupled alternative paths run per
            replicate (more gives a lower-variance gradient at proportional cost).
        reuse_memory: on the CPU, when a state tensor holds 32 MiB or more (e.g. float32 at
            8.4 million agents), give the large temporaries of the steps, and of their
            backward, memory that earlier ones no longer use
            (:class:`~lpm_graph.ops.reuse.ReuseBuffers`) instead of fresh pages from the
            kernel. The values are the same bit for bit; at 1e7 agents a step spent about
            half its time mapping and zeroing memory without it. Default ``True``.

    The ``"stochastic_derivative"`` estimator (Arya, Schauer, Schäfer and Rackauckas,
    *Automatic differentiation of programs with discrete randomness*, NeurIPS 2022) is
    unbiased for the gradient of the expected value of any function of the trajectory. Every
    draw of the run is ``b = 1[u >= survival]``; an agent that could have moved but did not
    would move if its rate ``r = -log(survival)`` grew by ``du``, which happens with
    probability ``dr`` given the draw. Beside the primal run, each alternative column keeps
    one such move, chosen online among all of them with probability ``r / M`` (weighted
    reservoir sampling, ``M`` their total), and runs the rest of the simulation with that
    agent moved and every uniform shared with the primal. Then ``M * (f(alt) - f) * grad log r``
    is an unbiased estimate of ``grad E[f]``. Primal flows carry no pathwise gradient (they
    are piecewise constant in the parameters); read gradients through
    :meth:`Trajectory.expectation`.
    """

    def __init__(
        self,
        protocol: Protocol,
        steps: int | None = None,
        *,
        mode: Mode = "stochastic",
        checkpoint: int | None = None,
        record_states: bool = False,
        progress: bool = False,
        estimator: Estimator = "straight_through",
        alternatives: int = 1,
        reuse_memory: bool = True,
        options: RunOptions | None = None,
    ) -> None:
        super().__init__()
        if options is None:
            options = RunOptions(
                steps,  # type: ignore[arg-type]  # checked there
                mode=mode,
                checkpoint=checkpoint,
                record_states=record_states,
                progress=progress,
                estimator=estimator,
                alternatives=alternatives,
                reuse_memory=reuse_memory,
            )
        elif not isinstance(options, RunOptions):
            raise TypeError(f"options must be a RunOptions, got {type(options).__name__}.")
        elif steps is not None and steps != options.steps:
            raise ValueError(
                f"steps={steps!r} disagrees with options.steps={options.steps}; give one."
            )
        if not isinstance(protocol, Protocol):
            raise ValueError(
                f"protocol must be a lpm_graph Protocol (e.g. lpm_graph.protocols.SIR), got "
                f"{type(protocol).__name__}."
            )
        self.protocol = protocol
        self.options = options

    # the run options, read (and set, checked again) through the one object
    steps = property(lambda self: self.options.steps, lambda self, v: self._set(steps=v))
    mode = property(lambda self: self.options.mode, lambda self, v: self._set(mode=v))
    checkpoint = property(
        lambda self: self.options.checkpoint, lambda self, v: self._set(checkpoint=v)
    )
    record_states = property(
        lambda self: self.options.record_states, lambda self, v: self._set(record_states=v)
    )
    progress = property(lambda self: self.options.progress, lambda self, v: self._set(progress=v))
    estimator = property(
        lambda self: self.options.estimator, lambda self, v: self._set(estimator=v)
    )
    alternatives = property(
        lambda self: self.options.alternatives, lambda self, v: self._set(alternatives=v)
    )
    reuse_memory = property(
        lambda self: self.options.reuse_memory, lambda self, v: self._set(reuse_memory=v)
    )

    def _set(self, **changes: Any) -> None:
        self.options = replace(self.options, **changes)

    def forward(
        self,
        graph: PopulationGraph,
        state: Mapping[str, Tensor] | None = None,
        *,
        initial_infected: object = None,
        seed: int | Sequence[int] = 0,
        replicates: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> Trajectory:
        """Run on ``graph`` from ``state`` (or from ``initial_infected``) with ``seed``.

        Args:
            graph: the population graph; the run happens on its device.
            state: an initial per-agent state; otherwise built from ``initial_infected``.
            initial_infected: see :func:`lpm_graph.protocols.base.seed_infected`.
            seed: the run's seed; the same seed on the same device gives bit-identical results.
                A sequence of seeds runs an ensemble: one replicate column per seed, column
                ``i`` equal to the run with ``seed[i]`` alone (its draws are exactly that run's;
                sums over agents or edges may differ in the last bits where they are not exact,
                e.g. weighted aggregation).
            replicates: run ``R`` independent replicates at once as extra state columns (all
                drawn from the one ``seed``); with a sequence of seeds, ``None`` or its length.
            dtype: floating dtype of the state (default: that of ``initial_infected`` when it
                is a floating tensor of probabilities, else ``torch.get_default_dtype()``).
        """
        if replicates is not None:
            try:
                replicates = check_int(replicates, "replicates", 1)
            except ValueError:
                raise ValueError(
                    f"replicates must be None or a positive int, got {replicates!r}."
                ) from None
        _check_graph(graph)
        _check_dtype(dtype)
        if state is not None and initial_infected is not None:
            raise ValueError(
                "give either state= (the whole initial state) or initial_infected= (the "
                "protocol builds the state from it), not both: initial_infected would be ignored."
            )
        streams = RandomStreams(seed, graph.device)
        if streams.members is not None:
            replicates = self._ensemble_columns(streams.members, replicates)
        if (
            dtype is None
            and torch.is_tensor(initial_infected)
            and initial_infected.dtype in (torch.float32, torch.float64)
        ):
            dtype = initial_infected.dtype  # probabilities given in float64 run in float64
        dtype = dtype or torch.get_default_dtype()
        self._check_memory(graph, replicates, dtype)
        self.protocol.check(graph)
        if state is None:
            state = self.protocol.initial_state(
                graph, initial_infected, streams, replicates, dtype, self.mode
            )
        else:
            state = self._checked_state(graph, state, streams, replicates, dtype)
        bar = _progress(self.steps) if self.progress else None
        if self.estimator == "stochastic_derivative":
            return replace(self._coupled(graph, state, streams, bar), replicates=replicates)
        names = list(state)
        record = _Recorder(self.protocol, state, self.record_states, self.steps)
        reuse = for_run(state, self.reuse_memory)
        start = list(state.values())
        t = 0
        chunk = self.checkpoint or 1
        use_checkpoint = self.checkpoint is not None and torch.is_grad_enabled()
        with reuse or contextlib.nullcontext(), _forgetting_ahead(streams):
            while t < self.steps:
                n = min(chunk, self.steps - t)
                if use_checkpoint:
                    state, obs, fl, kept = self._checkpointed(graph, state, names, t, n, streams)
                else:
                    state, obs, fl, kept = self._run(graph, state, t, n, streams, self.steps)
                record.extend(obs, fl, kept)
                t += n
                if bar is not None:
                    bar.update(n)
        if bar is not None:
            bar.close()
        traj = record.trajectory(state, self.protocol.dt)
        if reuse is not None:
            outputs = [*traj.counts.values(), *traj.flows.values(), *traj.final_state.values()]
            outputs += [x for kept in traj.states or () for x in kept.values()]
            if not any(x.requires_grad for x in outputs):
                reuse.release()
            else:  # the backward's temporaries reuse the blocks too
                reuse_in_backward(reuse, outputs, [*start, *_tensors_of(self.protocol)])
        return replace(traj, replicates=replicates, seeds=streams.members)

    def _check_memory(
        self, graph: PopulationGraph, replicates: int | None, dtype: torch.dtype
    ) -> None:
        """Refuse, before allocating, a run whose state and recorded series alone cannot fit:
        one value per agent, replicate and compartment, and one per step and compartment (a
        lower bound: steps also need temporaries, and stages more columns)."""
        node_type = getattr(self.protocol, "node_type", None)
        types = [node_type] if node_type in graph.node_types else graph.node_types
        agents = sum(graph.num_nodes(t) for t in types)
        values = max(1, len(getattr(self.protocol, "compartments", ())))
        columns = replicates or 1
        itemsize = torch.empty(0, dtype=dtype).element_size()
        need = (agents + self.steps + 1) * columns * values * itemsize
        check_memory(
            need,
            f"a run of {agents:,} agents x {columns:,} replicate(s) x {self.steps:,} steps",
            "use fewer agents, replicates or steps (or run the replicates in batches with "
            "lpm_graph.ensemble.run_ensemble)",
            graph.device,
        )

    def _checked_state(
        self,
        graph: PopulationGraph,
        state: Mapping[str, Tensor],
        streams: RandomStreams,
        replicates: int | None,
        dtype: torch.dtype,
    ) -> State:
        """A user's initial state, checked against the one the protocol builds (its keys,
        shapes and dtypes), with finite values and compartments in [0, 1], before any step."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a mapping from state names to tensors, got {type(state).__name__}."
            )
        state = dict(state)
        for key, value in state.items():
            if not torch.is_tensor(value):
                raise TypeError(f"state[{key!r}] must be a tensor, got {type(value).__name__}.")
            if value.device != graph.device:
                raise ValueError(
                    f"state[{key!r}] is on {value.device}, the graph on {graph.device}; move the "
                    "state with .to(graph.device)."
                )
            if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
                raise ValueError(
                    f"state[{key!r}] is {value.dtype}; states need float32 or float64 (half "
                    "precision cannot count past 2048 agents): convert it with .float()."
                )
        try:  # the protocol's own layout: nobody infected, same replicates and dtype
            reference = self.protocol.initial_state(graph, 0, streams, replicates, dtype,
                                                    self.mode)  # fmt: skip
        except (ValueError, TypeError):
            reference = None  # a protocol whose start needs more than a count
        if reference is not None:
            # more keys are allowed: a protocol may read outside inputs from the state (a
            # behaviour model reads an epidemic's "I")
            missing = sorted(set(reference) - set(state))
            if missing:
                raise ValueError(
                    f"state lacks {missing} of {type(self.protocol).__name__}'s state; its keys "
                    f"are {sorted(reference)}, the state given has {sorted(state)} (see "
                    f"protocol.initial_state(...) for the layout)."
                )
            for key, want in reference.items():
                got = state[key]
                if got.shape != want.shape:
                    raise ValueError(
                        f"state[{key!r}] has shape {list(got.shape)}, the protocol's is "
                        f"{list(want.shape)}."
                    )
                if got.is_floating_point() != want.is_floating_point():
                    raise ValueError(
                        f"state[{key!r}] is {got.dtype}, the protocol's is {want.dtype}."
                    )
        compartments = set(getattr(self.protocol, "compartments", ()))
        for key, value in state.items():
            if not value.is_floating_point():
                continue
            value = value.detach()
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"state[{key!r}] holds NaN or infinite values.")
            if key in compartments and value.numel():
                low, high = float(value.min()), float(value.max())
                if low < 0 or high > 1:
                    raise ValueError(
                        f"state[{key!r}] must hold per-agent indicators or probabilities in "
                        f"[0, 1], got values in [{low:g}, {high:g}]."
                    )
        occupancy = getattr(self.protocol, "occupancy", None)
        total = occupancy(state) if reference is not None and occupancy is not None else None
        if total is not None and total.numel():
            off = (total.detach().to(torch.float64) - 1).abs()
            if float(off.max()) > 1e-3:
                agent = int(off.reshape(off.shape[0], -1).amax(1).argmax())
                raise ValueError(
                    f"every agent must be in exactly one compartment (its values over "
                    f"{list(self.protocol.compartments)} sum to 1), but agent {agent}'s sum to "
                    f"{total.reshape(total.shape[0], -1)[agent].tolist()}; fix the state."
                )
        return state

    def _ensemble_columns(self, seeds: tuple[int, ...], replicates: int | None) -> int:
        """The replicate columns of an ensemble run over ``seeds``, or a clear error."""
        if replicates is not None and replicates != len(seeds):
            raise ValueError(
                f"replicates={replicates} but {len(seeds)} seeds were given; an ensemble has "
                "one replicate column per seed: leave replicates unset."
            )
        if self.estimator == "stochastic_derivative":
            raise ValueError(
                "the 'stochastic_derivative' estimator draws its alternative paths from one "
                "stream per run and cannot run an ensemble of seeds in one batch; give one int "
                "seed per run (lpm_graph.ensemble.run_ensemble(..., batch_size=1) does that)."
            )
        return len(seeds)

    def _run(
        self,
        graph: PopulationGraph,
        state: State,
        t0: int,
        n: int,
        streams: RandomStreams,
        end: int | None = None,
    ) -> tuple[State, list[dict[str, Tensor]], list[dict[str, Tensor]], list[State]]:
        """Steps ``t0 .. t0 + n - 1``; the draws of the steps before ``end`` (default
        ``t0 + n``) are filled one step ahead, while the step before takes its totals."""
        observed, flows, kept = [], [], []
        end = t0 + n if end is None else end
        for t in range(t0, t0 + n):
            ctx = StepContext.begin(t, self.protocol.dt, state, streams, self.mode, self.estimator)
            state = self.protocol.step(graph, state, ctx)
            if t + 1 < end:
                streams.draw_ahead(t, t + 1)
            step_flows = ctx.flows
            totals = self.protocol.total_flows(step_flows)
            observed.append(self.protocol.observe(state))
            flows.append(totals)
            if self.record_states:
                kept.append(state)
        return state, observed, flows, kept

    def _coupled(
        self, graph: PopulationGraph, state: State, streams: RandomStreams, bar: Any
    ) -> Trajectory:
        """A stochastic-derivative run: the primal path plus ``alternatives`` coupled paths per
        replicate (see the class docstring)."""
        if any(v.requires_grad for v in state.values()):
            raise ValueError(
                "estimator='stochastic_derivative' does not differentiate the initial draw: "
                "give initial_infected as a count, ids or a mask, or use the straight-through "
                "estimator for gradients with respect to initial probabilities."
            )
        k = self.alternatives
        first = next(iter(state.values()))
        columns = first.shape[1] if first.dim() > 1 else None
        width = columns or 1
        device = first.device

        def tile(x: Tensor) -> Tensor:
            """``k`` copies of the replicate columns (the last dimension) side by side."""
            x = x if columns is not None else x.unsqueeze(-1)
            return x.repeat(*([1] * (x.dim() - 1)), k)

        alt = {name: tile(v) for name, v in state.items()}
        weight = torch.zeros(k * width, dtype=torch.float64, device=device)
        log_rate = torch.zeros(k * width, dtype=first.dtype, device=device)
        primal = _Recorder(self.protocol, state, self.record_states)
        other = _Recorder(self.protocol, alt, self.record_states)
        since = torch.full((k * width,), -1, dtype=torch.long, device=device)  # last switch
        dt = self.protocol.dt
        for t in range(self.steps):
            start = state
            candidates: list[tuple[str, Tensor, Tensor]] = []
            ctx = StepContext.begin(
                t, dt, state, streams, "stochastic", self.estimator, Coupling(candidates)
            )
            state = self.protocol.step(graph, state, ctx)
            step_flows = ctx.flows
            primal.add(state, step_flows)
            force: dict[str, Tensor] = {}
            if candidates:
                switch, log_rate, force = self._reservoir(
                    candidates, weight, log_rate, streams, t, k, columns
                )
            else:
                switch = torch.zeros(k * width, dtype=torch.bool, device=device)
            since = torch.where(switch, t, since)
            with torch.no_grad():
                alt_start = {
                    name: torch.where(switch, tile(start[name]), alt[name]) for name in alt
                }
                coupling = Coupling(force=force, tile=k, columns=columns)
                alt_ctx = StepContext.begin(
                    t, dt, alt_start, streams, "stochastic", self.estimator, coupling
                )
                alt = self.protocol.step(graph, alt_start, alt_ctx)
                alt_flows = alt_ctx.flows
            other.add(alt, alt_flows)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        run = primal.trajectory(state, dt)
        other_run = other.trajectory(alt, dt)
        # An alternative column restarts from the primal's state when it switches, so until
        # its last switch its path is the primal's: what it recorded before (an earlier
        # alternative) is replaced, else functions of the history (a sum of daily flows)
        # would compare the primal with a mixture of paths.
        for table, first in ((other_run.counts, 0), (other_run.flows, 1)):
            for name, value in table.items():
                same = tile(getattr(run, "counts" if first == 0 else "flows")[name])
                index = torch.arange(value.shape[0], device=device) + first
                before = index.reshape(-1, *([1] * (value.dim() - 1))) <= since
                table[name] = torch.where(before, same, value)
        coupled = CoupledPaths(other_run, weight, log_rate, k)
        run.coupled = coupled
        return run

    @staticmethod
    def _reservoir(
        candidates: list[tuple[str, Tensor, Tensor]],
        weight: Tensor,
        log_rate: Tensor,
        streams: RandomStreams,
        t: int,
        k: int,
        columns: int | None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One step of weighted reservoir sampling over the primal's candidate moves.

        Updates ``weight`` (the running total rate ``M``) in place; returns which alternative
        columns switch to a move of this step, the new ``log r`` per column, and the moves to
        force on the alternative run, per flow name.
        """
        width = columns or 1
        column = torch.arange(k * width, device=weight.device)
        # every candidate move as a row of one [moves, R] table, flows one after another
        sizes = [m.numel() // width for _, m, _ in candidates]
        with torch.no_grad():
            mass = torch.cat([m.reshape(-1, width) for _, m, _ in candidates])
            mass = mass.to(torch.float64)
            step_mass = mass.sum(0).repeat(k)
            weight += step_mass
            # the step's moves replace the kept one with probability m / M
            u = streams.uniform("stochastic_derivative/keep", t, (k * width,), torch.float64)
            switch = u * weight < step_mass
            cdf = mass.T.cumsum(1)  # [R, moves]
            v = streams.uniform("stochastic_derivative/pick", t, (k, width), torch.float64)
            target = (v * cdf[:, -1]).T.contiguous()  # [R, K]
            pick = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[1] - 1)
            pick = pick.T.reshape(-1)  # [K R], alternative column k * R + r
        rates = torch.cat(
            [torch.broadcast_to(r, m.shape).reshape(-1, width) for _, m, r in candidates]
        )
        chosen = rates[pick, column % width]
        chosen = torch.where(switch, chosen, torch.ones_like(chosen))
        log_rate = torch.where(switch, torch.log(chosen), log_rate)
        force = {}
        with torch.no_grad():
            offset = 0
            for (name, m, _), size in zip(candidates, sizes):
                mask = torch.zeros(size, k * width, dtype=torch.bool, device=weight.device)
                inside = switch & (pick >= offset) & (pick < offset + size)
                mask[(pick - offset).clamp(0, size - 1), column] = inside
                shape = (*m.shape[: m.dim() - (columns is not None)], k * width)
                force[name] = mask.reshape(shape)
                offset += size
        return switch, log_rate, force

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
        # The block keeps its starting state for recomputation, packed: a tensor of 0 / 1
        # values (the compartments of a stochastic run) as bool, 1 byte per entry instead of
        # 4 or 8. The float tensors themselves serve the first forward only (their autograd
        # edges carry the gradient to the previous block); the recomputation needs values.
        kinds = [(state[k].dtype, state[k].requires_grad) for k in names]
        stored = _pack_indicators([state[k] for k in names])
        start: list[State | None] = [state]

        def segment(*packed: Tensor) -> tuple[Tensor, ...]:
            values, start[0] = start[0], None
            if values is None:  # recomputation during backward: the same values, as leaves
                values = {
                    k: p.detach().to(dtype).requires_grad_(grad)
                    for k, p, (dtype, grad) in zip(names, packed, kinds)
                }
            out, observed, flows, _ = self._run(graph, values, t0, n, streams)
            layout["obs"] = list(observed[0])
            layout["flows"] = list(flows[0])
            flat = [out[k] for k in names]
            flat += [o[k] for o in observed for k in layout["obs"]]
            flat += [f[k] for f in flows for k in layout["flows"]]
            return tuple(flat)

        del state
        flat = _checkpoint(segment, *stored, use_reentrant=False, preserve_rng_state=False)
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


@contextlib.contextmanager
def _forgetting_ahead(streams: RandomStreams) -> Iterator[None]:
    """Drop the draws filled ahead that no step asked for when the steps end, normally or not
    (none in a plain run: each step draws what the step before drew)."""
    try:
        yield
    finally:
        streams.forget_ahead()


def _tensors_of(module: nn.Module) -> list[Tensor]:
    """Every tensor a module and its submodules hold: parameters, buffers, and tensors set
    as plain attributes (a rate computed by a network upstream of the run)."""
    out = [*module.parameters(), *module.buffers()]
    for m in module.modules():
        out += [v for v in vars(m).values() if isinstance(v, Tensor)]
    return out


def _pack_indicators(values: list[Tensor]) -> list[Tensor]:
    """Each floating tensor as bool when it holds only 0 and +1 (exactly: no -0, no
    fraction), else itself. One host read for the whole list (once per checkpointed block,
    not per step)."""
    if not values:
        return []
    with torch.no_grad():
        flags = [((v == 1) | ((v == 0) & ~torch.signbit(v))).all() for v in values]
        exact = torch.stack(flags).tolist()
        return [v.bool() if ok and v.is_floating_point() else v for v, ok in zip(values, exact)]


class _Recorder:
    """Collects the observables (and optionally states) of one run, step by step.

    Without autograd, every step's observables are copied into series allocated once for the
    whole run (``steps``). Kept as separate small tensors until the end, they would be
    allocated in the holes that each step's freed agent-sized temporaries leave in the heap,
    and glibc's allocator would then grow by about three agent-sized blocks per step (1.1 GB
    over 100 steps at 1e6 agents, measured). With autograd they stay tensors of the graph.
    """

    def __init__(
        self, protocol: Protocol, state: State, keep_states: bool, steps: int | None = None
    ) -> None:
        self.protocol = protocol
        self.steps = steps if not torch.is_grad_enabled() else None
        self.observed: list[dict[str, Tensor]] = []
        self.flows: list[dict[str, Tensor]] = []
        self.series: dict[str, dict[str, Tensor]] = {"counts": {}, "flows": {}}
        self.filled = {"counts": 0, "flows": 0}
        self.states = [state] if keep_states else None
        self.extend([protocol.observe(state)], [], [])

    def add(self, state: State, step_flows: Mapping[str, Tensor]) -> None:
        """One step: its end state and its per-agent flows."""
        kept = [state] if self.states is not None else []
        self.extend([self.protocol.observe(state)], [self.protocol.total_flows(step_flows)], kept)

    def extend(
        self,
        observed: list[dict[str, Tensor]],
        flows: list[dict[str, Tensor]],
        states: list[State],
    ) -> None:
        """Steps already observed (observables, flow totals and, if kept, states)."""
        if self.steps is None:
            self.observed += observed
            self.flows += flows
        else:
            for kind, values, length in (("counts", observed, self.steps + 1),
                                         ("flows", flows, self.steps)):  # fmt: skip
                for step in values:
                    self._write(kind, step, length)
        if self.states is not None:
            self.states += states

    def _write(self, kind: str, values: Mapping[str, Tensor], length: int) -> None:
        series, row = self.series[kind], self.filled[kind]
        for name, value in values.items():
            if name not in series:
                series[name] = value.new_empty((length, *value.shape))
            elif series[name].dtype != value.dtype:  # promote, as torch.stack would
                series[name] = series[name].to(torch.promote_types(series[name].dtype, value.dtype))
            series[name][row].copy_(value)
        self.filled[kind] = row + 1

    def trajectory(
        self, state: State, dt: float, coupled: CoupledPaths | None = None
    ) -> Trajectory:
        if self.steps is not None:
            counts = {k: v[: self.filled["counts"]] for k, v in self.series["counts"].items()}
            flows = {k: v[: self.filled["flows"]] for k, v in self.series["flows"].items()}
            return Trajectory(counts, flows, state, dt, self.states, coupled)
        counts = {k: torch.stack([o[k] for o in self.observed]) for k in self.observed[0]}
        flow_names = list(self.flows[0]) if self.flows else []
        flows = {k: torch.stack([f[k] for f in self.flows]) for k in flow_names}
        return Trajectory(counts, flows, state, dt, self.states, coupled)


def _progress(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="simulate")


def simulate(
    protocol: Protocol,
    graph: PopulationGraph,
    steps: int,
    *,
    initial_infected: object = None,
    seed: int | Sequence[int] = 0,
    state: Mapping[str, Tensor] | None = None,
    mode: Mode = "stochastic",
    replicates: int | None = None,
    checkpoint: int | None = None,
    record_states: bool = False,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    estimator: Estimator = "straight_through",
    alternatives: int = 1,
    reuse_memory: bool = True,
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
        alternatives=alternatives,
        reuse_memory=reuse_memory,
    )
    return sim(
        graph,
        state,
        initial_infected=initial_infected,
        seed=seed,
        replicates=replicates,
        dtype=dtype,
    )


def _check_graph(graph: object) -> None:
    from .graph import PopulationGraph

    if isinstance(graph, PopulationGraph):
        return
    kind = type(graph).__name__
    fix = (
        "wrap it with PopulationGraph.from_pyg(data)"
        if kind in ("HeteroData", "Data")
        else "build one with PopulationGraph.from_edge_index(edge_index, num_nodes) or a dataset"
    )
    raise TypeError(f"graph must be a lpm_graph.PopulationGraph, got {kind}; {fix}.")


def _check_dtype(dtype: object) -> None:
    if dtype is None:
        return
    if not isinstance(dtype, torch.dtype):
        raise TypeError(
            f"dtype must be a torch.dtype (torch.float32 or torch.float64), got {dtype!r}."
        )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"dtype={dtype} is not supported: states and counts need float32 or float64 (half "
            "precision cannot count past 2048 agents); use torch.float32 or torch.float64."
        )
