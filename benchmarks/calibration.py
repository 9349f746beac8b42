"""Time to quality of gradient-based against gradient-free calibration at ~10, ~100 and ~1,000
parameters: the same agent-based simulator, loss and start for every method.

Run ``python benchmarks/calibration.py`` (about 20 minutes on 2 cores); ``--quick`` is a
~2-minute check of the whole pipeline (smaller budgets; its figures are not the result).
Prints a Markdown table and writes it to ``--output`` (all or nothing).

Simulator: SEIRM (``mode="expected"``: deterministic, exact gradients) on a
``SyntheticPopulation`` of ``--agents`` agents over ``--weeks`` weeks (84 days by default),
observed through its daily onsets and deaths. Three parameterisations, each with its own
target produced by the simulator at known values (so the optimum has loss 0):

``weekly`` (``weeks + 1`` = 13 parameters)
    ``R`` per week (``Weekly``, bounds 0.3-6) and one mortality (``Bounded``, 0.001-0.3).
    Truth: ``R`` falling from 3 to 0.8 and back to 1.3 (:data:`WEEKLY_R`), mortality 0.05.
    Start: ``R = 2`` every week, mortality 0.02.
``daily-age`` (``7 weeks + 16`` = 100 parameters)
    ``R`` per day, mortality per age group (8) and susceptibility per age group (8, bounds
    0.1-3). Truth: the weekly ``R`` above with a +-15 % weekday cycle, mortality rising with
    age from 0.005 to 0.25, GradABM's susceptibilities. Start: ``R = 2`` every day, mortality
    0.02 and susceptibility 1 in every age group.
``calibnn`` (1,036 parameters with ``--hidden 11``)
    The weights of a :class:`~lpm_graph.train.CalibNN` (GRU encoder, week embedding, MLP
    decoder) that gives ``R`` per week and the mortality, bounds as in ``weekly``; its inputs
    are 3 seeded random daily signals (for one region the encoder's summary is a constant,
    so they only fix it). Truth: as ``weekly``. Start: the network's seeded initial weights
    (zero last layer: every value at the middle of its bounds).

The loss is :func:`~lpm_graph.train.normalized_mse` (each output's MSE over its mean square)
over all days, for every method. The quality threshold is ``--threshold`` times the start loss,
the same for every method and parameter count. Methods: Adam through the ``Trainer`` (its
defaults: lr 0.05, gradient clipping at 1), ``--epochs`` epochs, each one forward + backward
run; Nelder-Mead, CMA-ES (``cmaes``, sigma 0.5 in raw units), Optuna's TPE (default settings)
and, at the smallest count, differential evolution, all through
:func:`~lpm_graph.train.calibrate_gradient_free` on the raw (unconstrained) values in the box
[-6, 6], each with at most ``--budget`` forward runs and ``--time-limit`` seconds (whichever
comes first; the defaults give every gradient-free method more time than Adam's whole run).

Measured for each count and method: the runs made, their wall time (the optimiser's own work
included), the runs and seconds until the best loss so far first falls below the threshold
(timed when the loss of the run that reaches it is known), the best loss within the budget,
and the ratio gradient-free time / Adam time to the threshold. A method that does not reach
it gets "not reached" and the ratio a lower bound ("> its whole time / Adam's time"). The
machine is shared: the load averages before and after each method are printed with its row.
"""

from __future__ import annotations

import os

# One BLAS thread, set before numpy loads OpenBLAS: CMA-ES's eigendecomposition of a 1,036 x
# 1,036 covariance took 0.4 s on one thread and 2-14 s on two on this shared 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from lpm_graph.datasets import SyntheticPopulation  # noqa: E402
from lpm_graph.graph import PopulationGraph  # noqa: E402
from lpm_graph.protocols import SEIRM  # noqa: E402
from lpm_graph.protocols.seirm import GRADABM_SUSCEPTIBILITY  # noqa: E402
from lpm_graph.train import (  # noqa: E402
    Bounded,
    CalibNN,
    ParameterSet,
    SimulatorModel,
    Trainer,
    Weekly,
    calibrate_gradient_free,
    normalized_mse,
)

WEEKLY_R = (3.0, 2.6, 2.1, 1.6, 1.2, 0.9, 0.8, 0.9, 1.1, 1.3, 1.2, 1.0)
"""The true weekly reproduction number (held at its last value past week 12)."""
AGE_MORTALITY = (0.005, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.25)
"""The true mortality per age group of the ``daily-age`` problem."""
R_BOUNDS, MORTALITY_BOUNDS, SUSCEPTIBILITY_BOUNDS = (0.3, 6.0), (0.001, 0.3), (0.1, 3.0)
GRADIENT_FREE = ("nelder-mead", "cma", "tpe", "differential-evolution")


@dataclass
class Problem:
    """One parameter count: a builder of the model at its start, and the target."""

    name: str
    description: str
    build: Callable[[], SimulatorModel]
    target: dict[str, Tensor]
    methods: tuple[str, ...]


def simulator(graph: PopulationGraph, days: int, params: nn.Module) -> SimulatorModel:
    return SimulatorModel(
        SEIRM(learnable=False),
        graph,
        days,
        params,
        initial_infected=0.002,
        outputs=("onsets", "deaths"),
    )


def weekly_truth(weeks: int) -> Tensor:
    return torch.tensor([WEEKLY_R[min(w, len(WEEKLY_R) - 1)] for w in range(weeks)])


def observe(model: SimulatorModel) -> dict[str, Tensor]:
    with torch.no_grad():
        return {k: v.detach().clone() for k, v in model().items()}


def weekly_problem(graph: PopulationGraph, weeks: int) -> Problem:
    def params(r: float | Tensor, mortality: float) -> ParameterSet:
        return ParameterSet(
            {
                "reproduction_number": Weekly(r, weeks, *R_BOUNDS),
                "mortality": Bounded(mortality, *MORTALITY_BOUNDS),
            }
        )

    days = 7 * weeks
    target = observe(simulator(graph, days, params(weekly_truth(weeks), 0.05)))
    return Problem(
        "weekly",
        f"R per week ({weeks}) + one mortality",
        lambda: simulator(graph, days, params(2.0, 0.02)),
        target,
        GRADIENT_FREE,
    )


def daily_age_problem(graph: PopulationGraph, weeks: int) -> Problem:
    days = 7 * weeks

    def params(r: float | Tensor, mortality: float | Tensor, susceptibility: float | Tensor):
        return ParameterSet(
            {
                "reproduction_number": Weekly(r, days, *R_BOUNDS, steps_per_week=1),
                "mortality": Bounded(torch.as_tensor(mortality).expand(8), *MORTALITY_BOUNDS),
                "susceptibility": Bounded(
                    torch.as_tensor(susceptibility).expand(8), *SUSCEPTIBILITY_BOUNDS
                ),
            }
        )

    day = torch.arange(days)
    r_true = weekly_truth(weeks)[day // 7] * (1 + 0.15 * torch.sin(2 * math.pi * day / 7))
    truth = params(r_true, torch.tensor(AGE_MORTALITY), torch.tensor(GRADABM_SUSCEPTIBILITY))
    return Problem(
        "daily-age",
        f"R per day ({days}) + mortality (8) and susceptibility (8) per age group",
        lambda: simulator(graph, days, params(2.0, 0.02, 1.0)),
        observe(simulator(graph, days, truth)),
        GRADIENT_FREE[:3],
    )


def calibnn_problem(graph: PopulationGraph, weeks: int, hidden: int) -> Problem:
    days = 7 * weeks
    features = torch.randn(days, 3, generator=torch.Generator().manual_seed(0))
    bounds = {"reproduction_number": R_BOUNDS, "mortality": MORTALITY_BOUNDS}
    target = weekly_problem(graph, weeks).target
    return Problem(
        "calibnn",
        f"CalibNN weights (hidden {hidden}) giving R per week + mortality",
        lambda: simulator(graph, days, CalibNN(features, weeks, bounds, hidden=hidden, seed=0)),
        target,
        GRADIENT_FREE[:3],
    )


class Recorder:
    """The loss, called once per model run: keeps the time and value of each call."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.losses: list[float] = []
        self.start = time.perf_counter()

    def __call__(self, pred: Mapping[str, Tensor], target: Mapping[str, Tensor], days) -> Tensor:
        loss = normalized_mse(pred, target, days)
        self.times.append(time.perf_counter())
        self.losses.append(float(loss.detach()))
        return loss

    def reached(self, threshold: float) -> tuple[int, float] | None:
        """(runs, seconds) until the first loss <= threshold, or None."""
        for k, loss in enumerate(self.losses):
            if loss <= threshold:
                return k + 1, self.times[k] - self.start
        return None


@dataclass
class Row:
    problem: str
    params: int
    method: str
    runs: int
    seconds: float
    best: float
    reached: tuple[int, float] | None
    load: tuple[float, float]


def run_method(problem: Problem, method: str, threshold: float, args: argparse.Namespace) -> Row:
    """One calibration from the problem's start; the loss is recorded at every run."""
    model = problem.build()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    days = slice(0, model.steps)
    load = os.getloadavg()[0]
    record = Recorder()
    if method == "adam":
        Trainer(model, loss=record, log_every=None).fit(problem.target, days, epochs=args.epochs)
    else:
        calibrate_gradient_free(
            model,
            problem.target,
            days,
            method=method,
            budget=args.budget,
            loss=record,
            seed=args.seed,
            time_limit=args.time_limit,
        )
    seconds = time.perf_counter() - record.start
    return Row(
        problem.name,
        n_params,
        method,
        len(record.losses),
        seconds,
        min(record.losses),
        record.reached(threshold),
        (load, os.getloadavg()[0]),
    )


LABELS = {
    "adam": "Adam (Trainer), forward + backward",
    "nelder-mead": "Nelder-Mead",
    "cma": "CMA-ES",
    "tpe": "Optuna TPE",
    "differential-evolution": "differential evolution",
}


def table(rows: list[Row], thresholds: dict[str, tuple[float, float]]) -> list[str]:
    lines = [
        "| parameters | method | runs | wall time (s) | best loss | runs to threshold | "
        "time to threshold (s) | ratio to Adam | load 1 min (start/end) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    adam = {r.problem: r.reached for r in rows if r.method == "adam"}
    for r in rows:
        start, threshold = thresholds[r.problem]
        grad = adam.get(r.problem)
        if r.reached is None:
            runs, shown = "not reached", f"not reached in {r.seconds:.0f}"
            ratio = f"> {r.seconds / grad[1]:.1f}x" if grad else "n/a"
        else:
            runs, shown = str(r.reached[0]), f"{r.reached[1]:.1f}"
            ratio = f"{r.reached[1] / grad[1]:.2g}x" if grad else "n/a (Adam did not reach)"
        lines.append(
            f"| {r.params:,} ({r.problem}) | {LABELS[r.method]} | {r.runs:,} | {r.seconds:.1f} | "
            f"{r.best:.3g} ({r.best / start:.1e} x start) | {runs} | {shown} | {ratio} | "
            f"{r.load[0]:.1f} / {r.load[1]:.1f} |"
        )
    return lines


def write(path: Path, text: str) -> None:
    """All or nothing: a temporary file in the same folder, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=11, help="CalibNN width")
    parser.add_argument("--epochs", type=int, default=300, help="Adam epochs")
    parser.add_argument("--budget", type=int, default=5000, help="gradient-free runs at most")
    parser.add_argument("--time-limit", type=float, default=90.0, help="gradient-free seconds")
    parser.add_argument("--threshold", type=float, default=1e-2, help="fraction of start loss")
    parser.add_argument("--problems", nargs="+", default=["weekly", "daily-age", "calibnn"])
    parser.add_argument("--methods", nargs="+", default=["adam", *GRADIENT_FREE])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of CMA-ES, TPE and DE")
    parser.add_argument("--quick", action="store_true", help="~2 min check: small budgets")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results/calibration.md"))
    args = parser.parse_args()
    if args.quick:
        args.agents, args.epochs, args.time_limit = 500, 60, 6.0
    torch.set_num_threads(args.threads)
    began, load_before = time.perf_counter(), os.getloadavg()

    graph = SyntheticPopulation(args.agents, seed=0)[0]
    builders = {
        "weekly": lambda: weekly_problem(graph, args.weeks),
        "daily-age": lambda: daily_age_problem(graph, args.weeks),
        "calibnn": lambda: calibnn_problem(graph, args.weeks, args.hidden),
    }
    rows: list[Row] = []
    thresholds: dict[str, tuple[float, float]] = {}
    for name in args.problems:
        problem = builders[name]()
        with torch.no_grad():
            start = float(normalized_mse(problem.build()(), problem.target, slice(None)))
        thresholds[name] = (start, args.threshold * start)
        for method in ["adam", *problem.methods]:
            if method not in args.methods:
                continue
            row = run_method(problem, method, args.threshold * start, args)
            rows.append(row)
            print(
                f"{name}: {method}: {row.runs} runs, {row.seconds:.1f} s, best {row.best:.3g} "
                f"(start {start:.3g}), reached {row.reached}",
                file=sys.stderr,
                flush=True,
            )

    load_after = os.getloadavg()
    command = " ".join(["python", "benchmarks/calibration.py", *sys.argv[1:]])
    lines = [
        "# Calibration time to quality: gradient-based against gradient-free",
        "",
        f"`{command}` ({datetime.date.today().isoformat()}, "
        f"{time.perf_counter() - began:.0f} s in all, {args.threads} torch thread(s), "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})",
        "",
        f"SEIRM expected mode, {args.agents:,} agents, {7 * args.weeks} days, daily onsets and "
        f"deaths; threshold {args.threshold:g} x each problem's start loss; Adam {args.epochs} "
        f"epochs; gradient-free at most {args.budget:,} runs and {args.time_limit:g} s each.",
        f"Load averages (1, 5, 15 min) of the shared machine: before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}; after "
        f"{', '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} cores).",
        "",
        *table(rows, thresholds),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write(Path(args.output), text)


if __name__ == "__main__":
    main()
