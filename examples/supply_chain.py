"""A capacity shock travelling down a four-tier supply chain, and what-if gradients.

    python examples/supply_chain.py            # writes examples/output/supply_chain.png

A random firm network with sectors raw -> parts -> assembly -> retail (each firm buys from
``--suppliers`` firms of every input sector) starts in the steady state of its final demand,
with ``--spare-capacity`` above its steady output. From ``--shock-start`` to ``--shock-end`` the
raw sector loses ``--shock`` of its capacity. Inventories buffer the shock for a while; then
shortages move downstream tier by tier, and the orders of firms rebuilding their stocks
(the bullwhip) prolong them after the shock. The run is differentiable, so one backward pass
gives how the final consumption lost would change with the order policy and raw capacity.
Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lpm_graph import simulate
from lpm_graph.protocols.supply_chain import (
    CapacityShock,
    SupplyChain,
    firm_network,
    sector_values,
    steady_output,
)

HERE = Path(__file__).resolve().parent
SECTORS = ["raw", "parts", "assembly", "retail"]
# input_coefficients[k, l]: units of sector k's goods per unit of a sector-l firm's output
TABLE = [
    [0.1, 0.3, 0.0, 0.0],
    [0.0, 0.1, 0.4, 0.0],
    [0.0, 0.0, 0.1, 0.5],
    [0.0, 0.0, 0.0, 0.0],
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--firms-per-sector", type=int, default=25)
    p.add_argument("--suppliers", type=int, default=3, help="suppliers per input sector")
    p.add_argument("--steps", type=int, default=80, help="days simulated")
    p.add_argument("--shock", type=float, default=0.5, help="share of raw capacity lost")
    p.add_argument("--shock-start", type=float, default=10.0)
    p.add_argument("--shock-end", type=float, default=40.0)
    p.add_argument("--spare-capacity", type=float, default=0.2, help="above steady output")
    p.add_argument("--target-inventory", type=float, default=5.0, help="days of input use")
    p.add_argument("--adjustment-time", type=float, default=4.0, help="days")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=HERE / "output/supply_chain.png")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = firm_network(
        [args.firms_per_sector] * len(SECTORS),
        TABLE,
        suppliers_per_input=args.suppliers,
        sector_names=SECTORS,
        seed=args.seed,
    )
    demand = sector_values(graph, {"retail": 1.0, "assembly": 0.2}).double()  # per firm, day
    steady = steady_output(graph, demand)
    margin = torch.tensor(1 + args.spare_capacity, dtype=torch.float64, requires_grad=True)
    shock = CapacityShock(args.shock, sector="raw", start=args.shock_start, end=args.shock_end)
    chain = SupplyChain(
        margin * steady,
        demand,
        args.target_inventory,
        args.adjustment_time,
        shocks=[shock],
    )
    traj = simulate(chain, graph, args.steps, dtype=torch.float64)

    # final consumption lost over the run, and its gradients (one backward pass)
    sector = graph["firm"].sector
    final = torch.zeros(len(SECTORS), dtype=torch.float64).index_add(0, sector, demand)
    lost = (final - traj.flows["consumption"]).sum()
    lost.backward()
    total = float(final.sum()) * args.steps

    days = torch.arange(1, args.steps + 1)
    base = torch.zeros(len(SECTORS), dtype=torch.float64).index_add(0, sector, steady)
    output = 100 * traj.flows["output"].detach() / base
    shortage = 100 * traj.flows["shortage"].detach() / traj.flows["demand"].detach()
    inventory = traj.counts["inventory"].detach()
    held = 100 * inventory / inventory[0].clamp_min(1e-12)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    panels = [
        (axes[0], days, output, "output (% of steady state)", "Output by sector"),
        (axes[1], days, shortage, "unmet demand (% of demand)", "Shortage by sector"),
        (axes[2], torch.arange(args.steps + 1), held, "stock (% of initial)", "Inventories"),
    ]
    for ax, x, y, ylabel, title in panels:
        ax.axvspan(args.shock_start, args.shock_end, color="0.9", label="raw capacity shock")
        for k, name in enumerate(SECTORS):
            if title == "Inventories" and k == len(SECTORS) - 1:
                continue  # nobody uses retail goods as an input
            label = f"{name} goods held downstream" if title == "Inventories" else name
            ax.plot(x, y[:, k], label=label)
        ax.set_xlabel("day")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{graph.num_nodes():,} firms, {graph.num_edges():,} supply links: raw sector loses "
        f"{args.shock:.0%} of its capacity on days {args.shock_start:g}-{args.shock_end:g}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)

    share = float(lost.detach()) / total
    print(f"final consumption lost: {float(lost.detach()):.2f} of {total:.0f} ({share:.1%})")
    print("what-if gradients of the consumption lost:")
    print(f"  per unit of capacity margin (all firms): {float(margin.grad):+.2f}")
    print(f"  per day of target inventory:            {float(chain.target_inventory.grad):+.2f}")
    print(f"  per day of adjustment time:             {float(chain.adjustment_time.grad):+.2f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
