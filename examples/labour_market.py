"""A year of weekly unemployment claims in four areas hit by an epidemic wave and a lockdown.

    python examples/labour_market.py            # writes examples/output/labour_market.png

The population is a synthetic one (households, schools, workplaces, community contacts) whose
workers and job seekers get an area (one per household) and an occupation (one per
workplace); see ``lpm_graph.protocols.labour.labour_population``. Two observed drivers move
the job-loss and hiring hazards of ``LabourMarket``: the weekly case count of each area (a
wave that reaches the areas one after another, standardised to peak at 1) and a policy
stringency index (a lockdown from week 10, eased in week 20). Layoffs spread among co-workers
and household members (``peer_job_loss``) and job seekers find work through employed
contacts (``peer_hiring``). The rates are illustrative, not estimates. The plot shows the
drivers, the weekly claims per area (mean of the stochastic replicates with their range as a
band, and the expected-mode curve) and the unemployment rate per area. Needs matplotlib
(``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lpm_graph import simulate
from lpm_graph.protocols.labour import LabourMarket, labour_population

HERE = Path(__file__).resolve().parent


def drivers(weeks: int, areas: int) -> torch.Tensor:
    """``[weeks, areas, 2]``: standardised case counts per area and a stringency index."""
    t = torch.arange(weeks, dtype=torch.float32)[:, None]
    peak = 12.0 + 6.0 * torch.arange(areas)  # the wave reaches area k in week 12 + 6 k
    cases = torch.exp(-0.5 * ((t - peak) / 4.0) ** 2)
    stringency = torch.where(t < 10, 0.0, torch.where(t < 20, 1.0, 0.4)).expand(weeks, areas)
    return torch.stack([cases, stringency], dim=-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=20_000, help="population size")
    p.add_argument("--weeks", type=int, default=52, help="weekly steps simulated")
    p.add_argument("--areas", type=int, default=4)
    p.add_argument("--occupations", type=int, default=6)
    p.add_argument("--replicates", type=int, default=10, help="stochastic runs averaged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=float, default=11.0, help="figure width (inches)")
    p.add_argument("--height", type=float, default=8.0, help="figure height (inches)")
    p.add_argument("--output", type=Path, default=HERE / "output/labour_market.png")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = labour_population(
        args.agents, num_areas=args.areas, num_occupations=args.occupations, seed=args.seed
    )
    x = drivers(args.weeks, args.areas)
    # occupations differ in baseline risk: 0.2 % to 0.6 % of workers per week
    job_loss = torch.linspace(0.002, 0.006, args.occupations)
    protocol = LabourMarket(
        job_loss,
        0.08,
        drivers=x,
        job_loss_sensitivity=[0.8, 1.1],  # cases, stringency
        hiring_sensitivity=[-0.3, -0.8],
        peer_job_loss=0.5,
        peer_hiring=0.5,
        claim_probability=0.4,
        peer_edge_types=("work", "household"),
    )
    with torch.no_grad():
        runs = simulate(protocol, graph, args.weeks, replicates=args.replicates, seed=args.seed)
        mean_field = simulate(protocol, graph, args.weeks, mode="expected")

    weeks = torch.arange(args.weeks + 1)
    fig, (ax_x, ax_c, ax_u) = plt.subplots(3, 1, figsize=(args.width, args.height), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for a in range(args.areas):
        colour = colours[a % len(colours)]
        ax_x.plot(weeks[:-1], x[:, a, 0], color=colour, label=f"cases, area {a}")
        claims = runs.flows["claims_by_area"][:, a]  # [weeks, replicates]
        ax_c.fill_between(
            weeks[1:], claims.min(-1).values, claims.max(-1).values, color=colour, alpha=0.2
        )
        ax_c.plot(weeks[1:], claims.mean(-1), color=colour, label=f"area {a}")
        ax_c.plot(weeks[1:], mean_field.flows["claims_by_area"][:, a], color=colour, linestyle=":")
        employed = runs.counts["employed_by_area"][:, a]
        unemployed = runs.counts["unemployed_by_area"][:, a]
        rate = 100 * unemployed / (employed + unemployed)
        ax_u.plot(weeks, rate.mean(-1), color=colour, label=f"area {a}")
    ax_x.plot(weeks[:-1], x[:, 0, 1], color="black", linestyle="--", label="stringency")
    ax_x.set_ylabel("driver (standardised)")
    ax_x.legend(ncol=args.areas + 1, fontsize="small")
    ax_c.plot([], [], color="grey", linestyle=":", label="expected mode")
    ax_c.set_ylabel("new claims per week")
    ax_c.legend(ncol=args.areas + 1, fontsize="small")
    ax_u.set_ylabel("unemployment rate (%)")
    ax_u.set_xlabel("week")
    ax_u.legend(ncol=args.areas, fontsize="small")
    total = runs.flows["claims"].sum(0)
    ax_x.set_title(
        f"LabourMarket on {args.agents:,} agents: {float(total.mean()):,.0f} claims in "
        f"{args.weeks} weeks (mean of {args.replicates} runs)"
    )
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
