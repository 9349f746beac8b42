"""Ensembles: many independent seeded runs, batched in one process or spread over Ray.

An ensemble is a list of seeds. Member ``i`` is the run with ``seeds[i]``, and it is the same
run however the ensemble is executed: one seed at a time, ``batch_size`` seeds at once as the
replicate columns of one run (:func:`~lpm_graph.simulate` with a list of seeds draws every
column from its own seed's streams), or batches on Ray workers. So an uncertainty band or a
calibration sweep does not change when the batch size or the backend does.

Batching pays where one run does not keep the cores busy: the per-step Python work and the
kernel launches are shared by the batch, and an aggregation reads the graph's indices once
for all its columns (``benchmarks/ensembles.py`` measures it). Ray (``pip install ray``, the
``ray`` extra) runs batches in parallel worker processes, on one machine or a cluster.

Example::

    from lpm_graph.ensemble import run_ensemble

    traj = run_ensemble(SIR(0.05, 0.1), graph, 100, seeds=range(64), initial_infected=10)
    low, mid, high = traj.quantiles("I", (0.05, 0.5, 0.95))  # each [101]
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int, check_memory
from .protocols.base import Protocol
from .simulator import CoupledPaths, RunOptions, Simulator, Trajectory

if TYPE_CHECKING:
    from .graph import PopulationGraph
    from .protocols.base import Estimator, Mode

__all__ = ["BACKENDS", "DEFAULT_BATCH_SIZE", "concat_trajectories", "run_ensemble", "sweep"]

logger = logging.getLogger(__name__)

Backend = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = ("local", "ray")
#: Members per batched run unless told otherwise.
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class _Options:
    """What every member's run shares besides the protocol, the graph and its seed."""

    run: RunOptions
    initial_infected: object
    dtype: torch.dtype | None
    keep_final_state: bool


def run_ensemble(
    protocol: Protocol,
    graph: PopulationGraph,
    steps: int,
    seeds: int | Iterable[int],
    *,
    initial_infected: object = None,
    batch_size: int | None = None,
    backend: Backend = "local",
    num_workers: int | None = None,
    mode: Mode = "stochastic",
    checkpoint: int | None = None,
    dtype: torch.dtype | None = None,
    estimator: Estimator = "straight_through",
    alternatives: int = 1,
    keep_final_state: bool = True,
    ray_options: Mapping[str, Any] | None = None,
) -> Trajectory:
    """Run ``protocol`` on ``graph`` once per seed and return the runs as replicate columns.

    Args:
        protocol: the step, as for :func:`~lpm_graph.simulate`; shared by every member.
        graph: the contact graph, as for :func:`~lpm_graph.simulate`.
        steps: number of steps ``T``, as for :func:`~lpm_graph.simulate`.
        initial_infected: as for :func:`~lpm_graph.simulate`, shared by every member.
        mode: ``"stochastic"`` or ``"expected"``, as for :func:`~lpm_graph.simulate`.
        checkpoint: steps per recomputed block, as for :func:`~lpm_graph.simulate`.
        dtype: floating dtype of the state, as for :func:`~lpm_graph.simulate`.
        estimator: gradient estimator, as for :func:`~lpm_graph.simulate`.
        alternatives: alternative paths per replicate, as for :func:`~lpm_graph.simulate`.
        seeds: the members' seeds, or a count ``M`` for seeds ``0 .. M - 1``.
        batch_size: members per batched run (default :data:`DEFAULT_BATCH_SIZE`, 8: the
            fastest measured, 1.5-2x faster than one by one at 1e4-1e5 agents, where all 64
            members at once were slower; ``benchmarks/ensembles.py``). ``1`` runs the seeds one
            by one, as the ``"stochastic_derivative"`` estimator requires; a batch's state is
            ``batch_size`` times a run's.
        backend: ``"local"`` (this process, in order; differentiable when autograd is on) or
            ``"ray"`` (batches as Ray tasks in parallel; forward only, results detached).
        num_workers: Ray only: the CPUs to start Ray with when it is not running yet (default
            all); each task uses ``cpus // num_workers`` torch threads.
        keep_final_state: keep every member's final per-agent state (``False``: an empty
            ``final_state``, which spares memory and, on Ray, the transfer).
        ray_options: Ray only: options of every task (e.g. ``{"num_gpus": 0.25}`` to run on
            GPU workers).

    Returns:
        One :class:`~lpm_graph.Trajectory` with ``replicates = M`` columns in the order of
        ``seeds`` (``traj.seeds``), each bit for bit the run of its seed alone on the same
        device (sums that are not exact, e.g. weighted aggregation, may differ in the last
        bits); ``traj.quantiles(name)`` gives uncertainty bands.
    """
    return sweep(
        [protocol],
        graph,
        steps,
        seeds,
        initial_infected=initial_infected,
        batch_size=batch_size,
        backend=backend,
        num_workers=num_workers,
        mode=mode,
        checkpoint=checkpoint,
        dtype=dtype,
        estimator=estimator,
        alternatives=alternatives,
        keep_final_state=keep_final_state,
        ray_options=ray_options,
    )[0]


def sweep(
    protocols: Sequence[Protocol] | Mapping[str, Protocol],
    graph: PopulationGraph,
    steps: int,
    seeds: int | Iterable[int],
    *,
    initial_infected: object = None,
    batch_size: int | None = None,
    backend: Backend = "local",
    num_workers: int | None = None,
    mode: Mode = "stochastic",
    checkpoint: int | None = None,
    dtype: torch.dtype | None = None,
    estimator: Estimator = "straight_through",
    alternatives: int = 1,
    keep_final_state: bool = True,
    ray_options: Mapping[str, Any] | None = None,
) -> Any:
    """The ensemble of :func:`run_ensemble` for each of several protocols (a parameter sweep:
    the same protocol with different parameters, or different protocols on one graph).

    Every protocol runs the same seeds, so differences between them are not seed noise
    (common random numbers). On Ray, every (protocol, batch) pair is one task and all run in
    parallel. Arguments as for :func:`run_ensemble`.

    Returns:
        A list of trajectories in the order of ``protocols``, or a dict with its keys when
        ``protocols`` is a mapping.
    """
    if isinstance(protocols, Protocol) or not isinstance(protocols, Sequence | Mapping):
        raise ValueError(
            f"protocols must be a list (or a {{name: protocol}} dict) of protocols, got "
            f"{type(protocols).__name__}; for one protocol use run_ensemble, or write [protocol]."
        )
    names = list(protocols) if isinstance(protocols, Mapping) else None
    models = list(protocols.values()) if isinstance(protocols, Mapping) else list(protocols)
    if not models:
        raise ValueError("protocols is empty; give at least one protocol to run.")
    for model in models:
        if not isinstance(model, Protocol):
            raise ValueError(
                f"protocol must be a lpm_graph Protocol (e.g. lpm_graph.protocols.SIR), got "
                f"{type(model).__name__}."
            )
    steps = check_int(steps, "steps")
    members = _seeds(seeds, steps)
    size = _batch_size(batch_size, len(members))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "local" and (num_workers is not None or ray_options):
        raise ValueError(
            "num_workers= and ray_options= apply to backend='ray'; with backend='local' the "
            "batches run in this process, in order: drop them or pass backend='ray'."
        )
    if estimator == "stochastic_derivative" and size > 1:
        raise ValueError(
            "the 'stochastic_derivative' estimator runs one seed per run: use batch_size=1."
        )
    run = RunOptions(
        steps, mode=mode, checkpoint=checkpoint, estimator=estimator, alternatives=alternatives
    )
    options = _Options(run, initial_infected, dtype, keep_final_state)
    batches = [members[i : i + size] for i in range(0, len(members), size)]
    if backend == "ray":
        runs = _run_on_ray(models, graph, batches, options, num_workers, ray_options or {})
    else:
        runs = [[_run_batch(m, graph, batch, options) for batch in batches] for m in models]
    out = [concat_trajectories(parts) for parts in runs]
    return dict(zip(names, out)) if names is not None else out


def concat_trajectories(parts: Sequence[Trajectory]) -> Trajectory:
    """Trajectories with replicate columns, joined along the replicate dimension (the last
    of every series and of every per-agent state) in the order given; ``dt`` and the
    observables must match. Kept per-step states are joined too."""
    if not parts:
        raise ValueError("no trajectories to join.")
    for part in parts:
        if not isinstance(part, Trajectory):
            raise ValueError(
                f"parts must be Trajectory objects (runs with seed=[...]), got "
                f"{type(part).__name__}."
            )
    first = parts[0]
    for part in parts:
        if part.replicates is None:
            raise ValueError("every trajectory must have replicate columns (seed=[...]).")
        if part.dt != first.dt or part.counts.keys() != first.counts.keys():
            raise ValueError("trajectories of different steps or observables cannot be joined.")
        if (part.coupled is None) != (first.coupled is None):
            raise ValueError("runs with and without coupled paths cannot be joined.")
    if len(parts) == 1:
        return first

    def cat(dicts: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        return {k: torch.cat([d[k] for d in dicts], dim=-1) for k in dicts[0]}

    coupled = None
    if first.coupled is not None:
        coupled = _join_coupled(parts)

    states = None
    if all(p.states is not None for p in parts):
        states = [cat(step) for step in zip(*(p.states for p in parts))]  # type: ignore[misc]
    seeds = None
    if all(p.seeds is not None for p in parts):
        seeds = tuple(s for p in parts for s in p.seeds)  # type: ignore[union-attr]
    return Trajectory(
        counts=cat([p.counts for p in parts]),
        flows=cat([p.flows for p in parts]),
        final_state=cat([p.final_state for p in parts]) if first.final_state else {},
        dt=first.dt,
        states=states,
        replicates=sum(p.replicates for p in parts),  # type: ignore[misc]
        seeds=seeds,
        coupled=coupled,
    )


def _join_coupled(parts: Sequence[Trajectory]) -> CoupledPaths:
    """The alternative paths of several stochastic-derivative runs, laid out as one run's:
    column ``k * R + r`` is alternative ``k`` of replicate ``r`` (``R`` replicates in all)."""
    paths = [p.coupled for p in parts]
    k = paths[0].alternatives  # type: ignore[union-attr]
    if any(c.alternatives != k for c in paths):  # type: ignore[union-attr]
        raise ValueError("runs with different numbers of alternatives cannot be joined.")

    def join(values: Sequence[Tensor]) -> Tensor:
        split = [v.reshape(*v.shape[:-1], k, v.shape[-1] // k) for v in values]
        out = torch.cat(split, dim=-1)
        return out.reshape(*out.shape[:-2], -1)

    def join_all(dicts: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        return {name: join([d[name] for d in dicts]) for name in dicts[0]}

    runs = [c.trajectory for c in paths]  # type: ignore[union-attr]
    trajectory = Trajectory(
        counts=join_all([r.counts for r in runs]),
        flows=join_all([r.flows for r in runs]),
        final_state=join_all([r.final_state for r in runs]) if runs[0].final_state else {},
        dt=runs[0].dt,
        replicates=runs[0].replicates and sum(r.replicates for r in runs),  # type: ignore[misc]
    )
    return CoupledPaths(
        trajectory,
        join([c.weight for c in paths]),  # type: ignore[union-attr]
        join([c.log_rate for c in paths]),  # type: ignore[union-attr]
        k,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _seeds(seeds: int | Iterable[int], steps: int) -> list[int]:
    if _is_int(seeds):
        if seeds < 1:  # type: ignore[operator]
            raise ValueError(f"seeds={seeds} as a count must be at least 1.")
        # every member's series alone (4 bytes per step, one observable): a lower bound
        check_memory(
            int(seeds) * (steps + 1) * 4,  # type: ignore[call-overload]
            f"seeds={int(seeds):,}: an ensemble of that many members x {steps + 1:,} steps",  # type: ignore[call-overload]
            "run fewer members (the quantiles of a few hundred are stable)",
        )
        return list(range(int(seeds)))  # type: ignore[call-overload]
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Iterable):
        raise ValueError(f"seeds must be a count or a list of int seeds, got {seeds!r}.")
    out = list(seeds)
    if not out or not all(_is_int(s) for s in out):
        raise ValueError(f"seeds must be a non-empty list of ints, got {seeds!r}.")
    return [int(s) for s in out]


def _batch_size(batch_size: int | None, members: int) -> int:
    if batch_size is None:
        return min(DEFAULT_BATCH_SIZE, members)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    return min(batch_size, members)


def _run_batch(
    protocol: Protocol, graph: PopulationGraph, seeds: list[int], options: _Options
) -> Trajectory:
    # one seed: an int seed with one replicate column draws the same numbers, and suits the
    # stochastic-derivative estimator too (its alternative paths need one stream per run)
    traj = Simulator(protocol, options=options.run)(
        graph,
        initial_infected=options.initial_infected,
        seed=seeds[0] if len(seeds) == 1 else seeds,
        replicates=1 if len(seeds) == 1 else None,
        dtype=options.dtype,
    )
    return replace(
        traj,
        seeds=tuple(seeds),
        final_state=traj.final_state if options.keep_final_state else {},
    )


def _run_on_ray(
    models: list[Protocol],
    graph: PopulationGraph,
    batches: list[list[int]],
    options: _Options,
    num_workers: int | None,
    ray_options: Mapping[str, Any],
) -> list[list[Trajectory]]:
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            "backend='ray' needs Ray: `pip install ray` (or the `ray` extra of lpm-graph), or "
            "use backend='local'."
        ) from err
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}.")
    if not ray.is_initialized():
        cpus = num_workers or len(os.sched_getaffinity(0))
        logger.info("starting Ray with %d CPUs", cpus)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    cpus = int(ray.available_resources().get("CPU", 1)) or 1
    workers = num_workers or cpus
    threads = max(1, cpus // min(workers, len(models) * len(batches)))
    task = ray.remote(_ray_task).options(num_cpus=1, **dict(ray_options))
    graph_ref = ray.put(graph)
    refs = []
    for model in models:
        model_ref = ray.put(model)  # once per protocol, shared by its batches
        refs.append([task.remote(model_ref, graph_ref, b, options, threads) for b in batches])
    return [ray.get(row) for row in refs]


def _ray_task(
    protocol: Protocol, graph: PopulationGraph, seeds: list[int], options: _Options, threads: int
) -> Trajectory:
    """One batch on a Ray worker: forward only, detached."""
    torch.set_num_threads(threads)
    with torch.no_grad():
        return _run_batch(protocol, graph, seeds, options)
