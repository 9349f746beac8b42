"""60 days of SEIRM on Franklin County, MA, next to the county's observed cases and deaths.

    python examples/franklin_seirm.py            # writes examples/output/franklin_seirm.png

The population is the bundled GradABM one (70,916 agents with age groups, their real contact
network). The observed series are the daily cases and deaths of county 25011, also bundled
(``lpm_graph.datasets.CountySeries``, 7-day moving averages). The model's parameters
here are illustrative, not fitted: calibrating them to the series is the job of the trainer.
A stay-at-home order from ``--lockdown-day`` (Massachusetts: 24 March 2020) keeps a share
``--compliance`` of agents at home (their contacts removed).
Model "cases" are the daily onsets (E -> I), on the assumption that one in ``--ascertainment``
is reported. Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import torch

from lpm_graph import simulate
from lpm_graph.datasets import CountySeries
from lpm_graph.datasets.bundled import franklin_contact_network
from lpm_graph.protocols import SEIRM, Duration, EdgeTypeClosure, Schedule

HERE = Path(__file__).resolve().parent


def observed(county: str, start: dt.date, days: int) -> dict[str, torch.Tensor]:
    """Daily cases and deaths of ``county`` (blank = 0), 7-day trailing moving averages."""
    data = CountySeries(
        root=False, counties=county, columns=["cases", "deaths"], smoothing=7, fill_missing=0.0
    )
    whole = data.by_fips(county)
    series = whole.between(start, start + dt.timedelta(days=days - 1))
    if len(series) != days or bool(series.values.isnan().any()):
        raise ValueError(
            f"the series of county {county} run {whole.dates[0]}..{whole.dates[-1]}: choose "
            f"--start and --days so that the {days} days and the 6 before them lie inside"
        )
    return {name: series[name] for name in ("cases", "deaths")}  # [days] each


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--start", default="2020-03-15", help="first simulated day")
    p.add_argument("--reproduction-number", type=float, default=3.0)
    p.add_argument("--lockdown-day", type=float, default=9.0, help="2020-03-24 in MA")
    p.add_argument("--compliance", type=float, default=0.5, help="share staying home")
    p.add_argument("--mortality", type=float, default=0.02)
    p.add_argument("--initial-infected", type=int, default=150)
    p.add_argument("--ascertainment", type=float, default=8.0)
    p.add_argument("--replicates", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=HERE / "output/franklin_seirm.png")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = franklin_contact_network()
    contacts = graph.relations[0][1]  # the one contact layer of this network
    lockdown = EdgeTypeClosure(
        contacts, Schedule([(args.lockdown_day, float("inf"), 1.0)]), args.compliance
    )
    model = SEIRM(
        args.reproduction_number,
        args.mortality,
        exposed=Duration.gamma(3.0, 1.5),
        infectious=Duration.gamma(5.0, 2.0),
        interventions=[lockdown],
        learnable=False,
    )
    traj = simulate(
        model,
        graph,
        args.days,
        initial_infected=args.initial_infected,
        seed=args.seed,
        replicates=args.replicates,
        progress=True,
    )
    start = dt.date.fromisoformat(args.start)
    obs = observed("25011", start, args.days)
    days = torch.arange(1, args.days + 1)
    model_series = {
        "cases": traj.flows["onsets"] / args.ascertainment,
        "deaths": traj.flows["deaths"],
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, name in zip(axes, ("cases", "deaths")):
        sim = model_series[name].double()
        low, mid, high = (sim.quantile(q, dim=1) for q in (0.1, 0.5, 0.9))
        ax.fill_between(days, low, high, alpha=0.3, label="model, 10-90% of replicates")
        ax.plot(days, mid, label=f"model median ({args.replicates} replicates)")
        ax.plot(days, obs[name], "k.", label="observed, 7-day average")
        ax.set_xlabel(f"days after {start.isoformat()}")
        ax.set_ylabel(f"daily {name}" + (f" (onsets / {args.ascertainment:g})" * (name == "cases")))
        ax.set_title(f"Franklin County, MA: daily {name}")
        ax.legend()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    total = traj.flows["infections"].sum(0).double()
    print(
        f"infections over {args.days} days: median {total.median():.0f} of {graph.num_nodes():,};"
        f" deaths: model median {traj.flows['deaths'].sum(0).double().median():.0f}, "
        f"observed {float(obs['deaths'].sum()):.0f}"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
