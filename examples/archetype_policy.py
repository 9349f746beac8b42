"""Agents decide every day whether to wear a mask; one decision per archetype, not per agent.

    python examples/archetype_policy.py            # writes examples/output/archetype_policy.png
    python examples/archetype_policy.py --llm-url http://localhost:8000/v1 --model qwen2.5-1.5b

An SEIRM epidemic runs on a random contact network whose agents have an age band (under 40,
40-69, 70+) and an area (town, countryside): 6 archetypes. Each day an ArchetypePolicy asks a
decision function once per archetype for the probability that its agents wear a mask, given
what the archetype sees (new infections per 1,000 people yesterday, its own mask use
yesterday); each agent then draws its own choice. A mask halves the wearer's susceptibility.
By default the decision function is a plain Python rule; with ``--llm-url`` and ``--model`` it
is a language model served over an OpenAI-compatible API (vLLM, llama.cpp, Ollama, ...),
whose replies are cached in ``--cache``. Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from lpm_graph import simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.policies import ArchetypePolicy, PolicyIntervention
from lpm_graph.protocols import SEIRM

HERE = Path(__file__).resolve().parent
BANDS = ("under 40", "40 to 69", "70 or older")
AREAS = ("a town", "the countryside")
PROMPT = (
    "You are a typical person aged {age} living in {area}. Yesterday {cases} in every 1,000 "
    "people around you were newly infected with a respiratory virus, and {masked}% of people "
    "like you wore a mask. What is the probability that you wear a mask when you go out "
    "today? Reply with a single number between 0 and 1."
)


def mask_rule(archetype) -> float:
    """Mask use rises with yesterday's infections per 1,000, more steeply for older agents
    and in town; a habit keeps part of yesterday's use."""
    v = archetype.numbers()
    per_1000 = 1000 * v["new_infections"] / v["agents"]
    concern = (1 + v["age_band"]) * (1.5 if v["area"] == 0 else 1.0)
    return 0.5 * v["mask"] + 0.5 * (1 - math.exp(-0.15 * concern * per_1000))


def prompt_fields(v: dict) -> dict:
    """Words for the keys and rounded figures (rounding lets the cache answer repeats)."""
    return {
        "age": BANDS[v["age_band"]],
        "area": AREAS[v["area"]],
        "cases": round(1000 * v["new_infections"] / v["agents"]),
        "masked": 10 * round(10 * v["mask"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=5000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--reproduction-number", type=float, default=2.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llm-url", help="OpenAI-compatible API base, e.g. http://localhost:8000/v1")
    p.add_argument("--model", help="the served model's name (with --llm-url)")
    p.add_argument("--cache", type=Path, default=HERE / "output/archetype_policy_replies.sqlite")
    p.add_argument("--output", type=Path, default=HERE / "output/archetype_policy.png")
    args = p.parse_args()
    if bool(args.llm_url) != bool(args.model):
        p.error("--llm-url and --model go together")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = args.agents
    graph = erdos_renyi(n, 10.0, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    age_group = torch.randint(0, 8, (n,), generator=gen)  # 0-19, 20-29, ..., 80+
    band = torch.bucketize(age_group, torch.tensor([3, 6]), right=True)  # <40, 40-69, 70+
    graph.set_node_attrs(
        age_group=age_group, age_band=band, area=torch.randint(0, 2, (n,), generator=gen)
    )

    if args.llm_url:
        from lpm_graph.policies.llm import OpenAIChatDecision

        decision = OpenAIChatDecision(
            args.llm_url, args.model, PROMPT, fields=prompt_fields, cache_path=args.cache
        )
    else:
        decision = mask_rule
    policy = ArchetypePolicy(decision, ("age_band", "area"), name="masks")

    masks = PolicyIntervention(policy, name="mask", susceptibility_effect=0.5)
    model = SEIRM(args.reproduction_number, 0.01, interventions=[masks], learnable=False)
    with torch.no_grad():
        traj = simulate(model, graph, args.days, initial_infected=max(1, n // 500), seed=args.seed)

    days = torch.arange(args.days + 1)
    _, _, counts = policy.groups(graph)
    adoption = traj.counts["mask_by_archetype"] / counts  # [T + 1, A]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for a, (b, area) in enumerate(masks.archetype_keys.tolist()):
        style = "-" if area == 0 else "--"
        ax.plot(days, adoption[:, a], style, label=f"{BANDS[b]}, {AREAS[area]}")
    ax.set_xlabel("day")
    ax.set_ylabel("share of the archetype wearing a mask")
    ax.set_title("Mask use per archetype (one decision each per day)")
    ax.legend(title="age, area", fontsize=8)
    ax2.plot(days[1:], traj.flows["infections"], label="new infections")
    ax2.set_xlabel("day")
    ax2.set_ylabel("agents newly infected per day")
    ax2.set_title(f"SEIRM, {n:,} agents")
    ax2.legend()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    per_step = sorted(set(policy.calls.values()))
    print(f"{len(counts)} archetypes, decision calls per day: {per_step}, "
          f"infections: {int(traj.flows['infections'].sum())} of {n:,}")  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
