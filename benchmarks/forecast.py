"""Rolling-origin forecasts of weekly COVID-19 deaths in the 14 Massachusetts counties, 2020.

Run ``python benchmarks/forecast.py`` (about 8 minutes on 2 cores, 1 torch thread);
``--quick`` is a 3-county, 3-origin check (a few minutes). Prints a Markdown table and writes it to
``--output`` (default ``benchmarks/results/forecast.md``) and the plot to ``--plot`` (default
``docs/images/forecast.png``), each all-or-nothing.

At every origin (8 by default, four weeks apart from 2020-05-01 to 2020-11-13) each model
sees the counties' daily deaths, cases and signals before the origin and forecasts the
weekly reported deaths 1-4 weeks ahead: the agent-based SEIRM driven by a calibration
network from each county's signals (one graph of a synthetic population per county, one
simulation for all counties), the same with the SEIRM ODE, persistence, damped-trend
exponential smoothing (statsmodels) and their ensemble. The metrics per horizon pool every
county and origin: MAE and RMSE of weekly deaths, ND (total absolute error over total
deaths) and the coverage of the 50 % and 90 % intervals. See
:mod:`lpm_graph.train.forecast` for the models, the loss and the intervals.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from lpm_graph.train.forecast import ForecastConfig, plot_forecasts, rolling_forecast

QUICK = {
    "counties": ("25017", "25025", "25027"),
    "origins": ("2020-06-26", "2020-09-18", "2020-11-13"),
    "agents": 300,
    "epochs": 60,
    "warm_epochs": 30,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 counties, 3 origins")
    parser.add_argument("--agents", type=int, default=None, help="agents per county (1000)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs at the first origin")
    parser.add_argument("--warm-epochs", type=int, default=None, help="epochs at later origins")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", default="benchmarks/results/forecast.md")
    parser.add_argument("--plot", default="docs/images/forecast.png")
    parser.add_argument(
        "--plot-counties",
        nargs="+",
        default=["25017", "25027", "25025", "25009", "25021", "25013"],
        help="counties drawn (default: six large counties; 'all' for every one)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = dict(QUICK) if args.quick else {}
    for name in ("agents", "epochs", "warm_epochs"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    cfg = ForecastConfig(**settings)
    load_before = os.getloadavg()
    began = time.perf_counter()
    result = rolling_forecast(cfg, progress=lambda line: print(line, flush=True))
    wall = time.perf_counter() - began
    load_after = os.getloadavg()
    lines = [
        f"# Rolling-origin forecasts: {len(cfg.counties)} counties x {len(cfg.origins)} "
        f"origins ({', '.join(cfg.origins)})",
        "",
        f"Command: `python benchmarks/forecast.py{' --quick' if args.quick else ''}`; "
        f"{cfg.agents} agents per county, {cfg.epochs} epochs at the first origin and "
        f"{cfg.warm_epochs} at the later ones, {args.threads} torch thread(s).",
        f"Wall time {wall / 60:.1f} min; model time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result.wall_time.items())
        + f". Load average of the machine before / after: {load_before[0]:.2f} / "
        f"{load_after[0]:.2f}.",
        "",
        "Weekly reported deaths, pooled over counties and origins (ND: total absolute error "
        "over total deaths; coverage: share of observed weeks inside the interval).",
        "",
        result.table(),
        "",
        "Ratio of ND to persistence's ND (below 1: better than persistence):",
        "",
        _ratios(result),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    _write(Path(args.output), text.encode())
    drawn = [c for c in args.plot_counties if c in cfg.counties] or list(cfg.counties)
    plot_forecasts(result, args.plot, None if "all" in args.plot_counties else drawn)
    print(f"wrote {args.output} and {args.plot}")


def _ratios(result) -> str:
    metrics = result.metrics()
    base = metrics.get("persistence")
    if base is None:
        return "(persistence not run)"
    horizons = sorted(base)
    rows = ["| model | " + " | ".join(f"{h} wk" for h in horizons) + " |"]
    rows.append("|---|" + "---:|" * len(horizons))
    for name, per in metrics.items():
        cells = [f"{per[h]['nd'] / base[h]['nd']:.2f}" for h in horizons]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


if __name__ == "__main__":
    main()
