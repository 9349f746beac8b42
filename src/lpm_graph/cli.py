"""The ``lpm-graph`` command line."""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from . import __version__


def _demo(args: argparse.Namespace) -> int:
    from .datasets import franklin_contact_network
    from .protocols import SIR
    from .simulator import simulate

    graph = franklin_contact_network().to(args.device)
    sir = SIR(args.transmission_rate, args.recovery_rate, dt=args.dt, order=args.order)
    print(f"{graph}  (Franklin County, MA; bundled GradABM contact network)")
    print(sir.plan())
    start = time.perf_counter()
    with torch.no_grad():
        traj = simulate(
            sir,
            graph,
            args.steps,
            initial_infected=args.initial_infected,
            seed=args.seed,
            progress=args.progress,
        )
    elapsed = time.perf_counter() - start
    n = graph.num_nodes()
    every = max(1, args.steps // 10)
    print(f"\n{'t':>6} {'S':>8} {'I':>8} {'R':>8} {'new infections':>15}")
    for k in range(0, args.steps + 1, every):
        new = "" if k == 0 else f"{int(traj.flows['infections'][k - 1]):>15,}"
        row = [int(traj.counts[c][k]) for c in "SIR"]
        print(f"{k * args.dt:>6g} {row[0]:>8,} {row[1]:>8,} {row[2]:>8,} {new}")
    attack = 1 - float(traj.counts["S"][-1]) / n
    speed = n * args.steps / elapsed
    transmissibility = float(sir.transmissibility())
    print(f"\nfinal attack rate {attack:.3f}; transmissibility T = {transmissibility:.3f}")
    print(f"{args.steps} steps in {elapsed:.2f} s ({speed:.3g} agent-steps/s on {graph.device})")
    return 0


def _info(_args: argparse.Namespace) -> int:
    import torch_geometric

    from .ops.aggregate import BACKENDS, torch_scatter_available

    print(f"lpm-graph {__version__}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"torch_geometric {torch_geometric.__version__}"
    )
    print(f"cuda available: {torch.cuda.is_available()}; threads: {torch.get_num_threads()}")
    available = [b for b in BACKENDS if b != "torch_scatter" or torch_scatter_available()]
    print(f"aggregation backends: {', '.join(available)} (default: csr)")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .train.experiment import CountyExperiment, run_county_experiment

    optional = {"epochs": args.epochs, "patience": args.patience, "lr": args.lr}
    cfg = CountyExperiment(
        county=args.county,
        population=args.population,
        agents=args.agents,
        start=args.start,
        forecast_date=args.forecast_date,
        budget=args.budget,
        method=args.method,
        uncertainty_seeds=args.seeds,
        seed=args.seed,
        **{k: v for k, v in optional.items() if v is not None},
    )
    print(f"calibrating county {cfg.county}: {cfg}")
    start = time.perf_counter()
    result = run_county_experiment(cfg)
    print(f"\nforecasts from {result.dates[result.forecast_start]} (weekly deaths, reported):\n")
    print(result.table())
    print(f"\n{'model':<48} {'runs':>6} {'time (s)':>9} {'train loss':>11}")
    for name, seconds in result.wall_time.items():
        runs, loss = result.evaluations[name], result.train_loss[name]
        print(f"{name:<48} {runs:>6} {seconds:>9.1f} {loss:>11.4g}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.md").write_text(result.table() + "\n")
    summary = {
        "config": vars(cfg),
        "metrics": result.metrics,
        "wall_time": result.wall_time,
        "evaluations": result.evaluations,
        "train_loss": result.train_loss,
        "parameters": result.parameters,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    try:
        from .train.plot import plot_forecast
    except ImportError:
        plot_forecast = None
    if plot_forecast is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot (pip install lpm-graph[plot])")
        else:
            fig, ax = plt.subplots(figsize=(10, 5))
            plot_forecast(
                result.predictions,
                result.reported,
                bands=result.runs,
                dates=result.dates,
                train_end=result.forecast_start,
                title=f"County {cfg.county}: daily deaths, fit and forecast",
                ylabel="daily deaths (reported)",
                ax=ax,
            )
            fig.savefig(out / "forecast.png", dpi=120, bbox_inches="tight")
            print(f"plot: {out / 'forecast.png'}")
    print(f"results: {out / 'results.json'}, {out / 'metrics.md'}")
    return 0


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpm-graph", description="Large Population Models as message passing."
    )
    parser.add_argument("--version", action="version", version=f"lpm-graph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="network SIR on the bundled Franklin County contact network")
    demo.add_argument(
        "--steps", type=_non_negative_int, default=120, help="number of steps (default 120)"
    )
    demo.add_argument("--dt", type=float, default=1.0, help="step length in days (default 1)")
    demo.add_argument(
        "--transmission-rate",
        type=float,
        default=0.1,
        help="per-contact transmission rate per day (default 0.1)",
    )
    demo.add_argument(
        "--recovery-rate", type=float, default=0.2, help="recovery rate per day (default 0.2)"
    )
    demo.add_argument(
        "--order",
        choices=["infect_first", "recover_first"],
        default="infect_first",
        help="phase order within a step",
    )
    demo.add_argument(
        "--initial-infected",
        type=_non_negative_int,
        default=10,
        help="number of initially infected agents (default 10)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", default="cpu", help="torch device (default cpu)")
    demo.add_argument("--progress", action="store_true", help="show a progress bar")
    demo.set_defaults(func=_demo)
    cal = sub.add_parser(
        "calibrate",
        help="calibrate SEIRM to a Massachusetts county's 2020 deaths and forecast 1-4 weeks",
    )
    cal.add_argument("--county", default="25011", help="FIPS code (default 25011, Franklin)")
    cal.add_argument(
        "--population", type=float, default=None, help="inhabitants (counties other than 25011)"
    )
    cal.add_argument("--agents", type=int, default=100_000, help="synthetic agents (not 25011)")
    cal.add_argument("--start", default="2020-03-01", help="first simulated day")
    cal.add_argument("--forecast-date", default="2020-12-04", help="first forecast day")
    cal.add_argument(
        "--epochs", type=int, default=None, help="epochs per trained model (default 150)"
    )
    cal.add_argument(
        "--patience", type=int, default=None, help="early-stopping patience (default 40)"
    )
    cal.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 0.05)")
    cal.add_argument("--budget", type=int, default=None, help="runs of the gradient-free fit")
    cal.add_argument("--method", default="nelder-mead", help="gradient-free method")
    cal.add_argument("--seeds", type=int, default=5, help="stochastic runs for the bands")
    cal.add_argument("--seed", type=int, default=0, help="random seed")
    cal.add_argument("--output", default="calibration", help="folder for results and plot")
    cal.set_defaults(func=_calibrate)
    info = sub.add_parser("info", help="versions and available backends")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"lpm-graph: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
