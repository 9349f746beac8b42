"""Gradient-based against gradient-free calibration of the same simulator, same loss.

Run ``python benchmarks/calibration.py`` (about 10 minutes on 2 cores); ``--agents 5000
--budget 300`` is a quick check. Prints a Markdown table and writes it to ``--output``.

Setup: SEIRM (expected mode) on a ``SyntheticPopulation`` of ``--agents`` agents over
``--weeks`` weeks; the truth is a known weekly reproduction number (falling from 3 to 0.9)
and mortality 0.05; the observed series are the daily onsets and deaths it produces. Every
method starts from the same wrong point (R = 2 every week, mortality 0.02) and minimises the
same loss (per-output MSE normalised by the target's mean square) over the raw parameters of
``weeks + 1`` bounded parameters (``weeks`` >= 8, so at least 9 parameters).

Measured: the loss reached after each model run and the wall-clock time to reach a loss
threshold (``--threshold`` times the starting loss): Adam through the Trainer (one forward
+ backward per epoch), Nelder-Mead and differential evolution (one forward per run). The
ratio is gradient-free time / gradient time; when a gradient-free method does not reach the
threshold within ``--budget`` runs, the ratio is a lower bound (marked ">").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lpm_graph.datasets import SyntheticPopulation
from lpm_graph.protocols import SEIRM
from lpm_graph.train import (
    Bounded,
    ParameterSet,
    SimulatorModel,
    Trainer,
    Weekly,
    calibrate_gradient_free,
)
from lpm_graph.train.losses import normalized_mse


def build(graph, weeks: int, r, mortality) -> SimulatorModel:
    params = ParameterSet(
        {
            "reproduction_number": Weekly(r, weeks, 0.3, 6.0),
            "mortality": Bounded(mortality, 0.001, 0.3),
        }
    )
    return SimulatorModel(
        SEIRM(learnable=False),
        graph,
        weeks * 7,
        params,
        initial_infected=0.002,
        outputs=("onsets", "deaths"),
    )


def time_to(history: list[float], seconds: float, threshold: float) -> float | None:
    """Seconds until the running best of ``history`` first drops below ``threshold``
    (evaluations assumed equally long)."""
    best = float("inf")
    for k, loss in enumerate(history):
        best = min(best, loss)
        if best <= threshold:
            return seconds * (k + 1) / len(history)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20_000)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=300, help="Adam epochs")
    parser.add_argument("--budget", type=int, default=1500, help="gradient-free model runs")
    parser.add_argument("--threshold", type=float, default=1e-3, help="fraction of start loss")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results/calibration.md"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    graph = SyntheticPopulation(args.agents, seed=0)[0]
    truth = torch.linspace(3.0, 0.9, args.weeks)
    with torch.no_grad():
        target = build(graph, args.weeks, truth, 0.05)()
    days = slice(0, args.weeks * 7)
    with torch.no_grad():
        start_loss = float(normalized_mse(build(graph, args.weeks, 2.0, 0.02)(), target, days))
    threshold = args.threshold * start_loss
    rows = []

    model = build(graph, args.weeks, 2.0, 0.02)
    history = Trainer(model, lr=0.05, clip=None).fit(target, days, epochs=args.epochs)
    with torch.no_grad():
        final = float(normalized_mse(model(), target, days))
    losses = [*history.loss[1:], final]  # loss after each step
    grad_time = time_to(losses, history.wall_time, threshold)
    r_error = float((model.params["reproduction_number"].weekly().detach() / truth - 1).abs().max())
    rows.append(("Adam (Trainer), forward + backward", len(losses), history.wall_time, final,
                 grad_time, r_error))  # fmt: skip

    for method in ("nelder-mead", "differential-evolution"):
        model = build(graph, args.weeks, 2.0, 0.02)
        start = time.perf_counter()
        out = calibrate_gradient_free(model, target, days, method=method, budget=args.budget)
        seconds = time.perf_counter() - start
        reached = time_to(out.history, seconds, threshold)
        r_error = float(
            (model.params["reproduction_number"].weekly().detach() / truth - 1).abs().max()
        )
        rows.append((f"{method}, forward only", out.evaluations, seconds, out.loss, reached,
                     r_error))  # fmt: skip

    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines = [
        "# Calibration: gradient-based against gradient-free",
        "",
        f"`python benchmarks/calibration.py --agents {args.agents} --weeks {args.weeks} "
        f"--epochs {args.epochs} --budget {args.budget}`",
        "",
        f"SEIRM expected mode, {args.agents:,} agents, {args.weeks * 7} days, {n_params} "
        f"parameters; start loss {start_loss:.4g}, threshold {threshold:.4g} "
        f"({args.threshold:g} x start).",
        "",
        "| method | model runs | wall time (s) | final loss | time to threshold (s) | "
        "ratio to Adam | max rel. error of weekly R |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs, seconds, loss, reached, r_error in rows:
        if reached is None:
            shown, ratio = f"not reached ({seconds:.1f})", f"> {seconds / grad_time:.1f}x"
        else:
            shown, ratio = f"{reached:.1f}", f"{reached / grad_time:.1f}x"
        lines.append(
            f"| {name} | {runs} | {seconds:.1f} | {loss:.3g} | {shown} | {ratio} | {r_error:.2%} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
