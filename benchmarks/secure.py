"""Secure SIR / SEIRM (their own phases on shares, ``secure_simulate``): time and bytes per
step with 2 parties in separate processes, against an older revision, and how it scales.

    python benchmarks/secure.py                      # the full benchmark (about 15 min here)
    python benchmarks/secure.py --models sir --repeats 1 --million-steps 0   # quicker
    python benchmarks/secure.py --device cuda        # the parties' shares on the GPU

Prints (and writes as Markdown, default ``benchmarks/results/secure.md``):

1. time against the old code: each model (SIR on G(n, m) with mean degree ``--degree``;
   SEIRM on a synthetic population), ``--agents`` private agents x ``--steps`` steps, 2
   parties each in its own process (gloo over localhost), with each version's default
   randomness and roles: this checkout (ChaCha20 keys from OS entropy, a dealer process and
   a data-owner process) and ``--baseline`` (default ``dd4eaa1``, the last commit before the
   rework: Mersenne-Twister shares, the dealer holding the inputs), run alternately in fresh
   processes, ``--repeats`` times each; medians of the secure steps' time (party 0), the
   ratio, and bytes per agent per step (sent between the parties, from the dealer, from the
   owner);
2. SIR with ``--million`` private agents (default 1,000,000) x ``--million-steps`` steps:
   time per step and the peak memory of each party process;
3. the reproducible-mode check (this checkout only): a seeded SIR run equals the plaintext
   ``simulate`` run of the same seed, day by day;
4. scaling (in-process parties, a 2-step run): bytes per party per step for several numbers
   of agents and mean degrees: they grow with the agents, not with the edges.

The machine is shared: the load average before and after is printed; figures taken while
anything else runs are worthless.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lpm_graph import simulate
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.secure import (
    LeakagePolicy,
    ProtocolInputs,
    Session,
    launch,
    secure_simulate,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# the models, shared with the child that times either version of the library
from _secure_child import population, protocol  # noqa: E402


def party(session: Session, model: str, agents: int, degree: float, steps: int, seed: int) -> dict:
    graph = population(model, agents, degree, seed).to(session.device)
    start = time.perf_counter()
    run = secure_simulate(protocol(model), graph, steps, session)
    if session.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    per_step = [s for s in session.cost.steps if isinstance(s.step, int)]
    return {
        "seconds": seconds,
        "counts": {k: v.tolist() for k, v in {**run.counts, **run.flows}.items()},
        "step_seconds": [s.seconds for s in per_step],
        "step_rounds": [s.rounds for s in per_step],
        "step_bytes": [s.bytes_per_party for s in per_step],
        "step_dealer": [s.dealer_bytes for s in per_step],
        "rounds": session.cost.rounds,
        "bytes": session.cost.bytes_per_party,
        "openings": dict(session.audit.kinds()),
    }


def scaling(agents: int, degree: float) -> tuple[int, int]:
    graph = erdos_renyi(agents, degree, seed=0)
    session = Session(2, owner=ProtocolInputs(protocol("sir"), agents, 10))
    secure_simulate(protocol("sir"), graph, 2, session)
    return graph.num_edges(), session.cost.steps[-1].bytes_per_party


def _child(src: Path, model: str, agents: int, degree: float, steps: int) -> dict:
    """One run of ``_secure_child.py`` with the ``lpm_graph`` under ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    done = subprocess.run(
        [sys.executable, str(HERE / "_secure_child.py"), model, str(agents), str(degree),
         str(steps)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"the run with {src} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["version"].startswith(str(src)):
        raise RuntimeError(f"expected lpm_graph from {src}, imported {result['version']}")
    return result


def _checkout(rev: str, into: Path) -> Path:
    """The ``src`` folder of ``rev`` of this repository, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def _per_agent(values: list[int], agents: int) -> float:
    return statistics.median(values) / agents if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("sir", "seirm"), default=["sir", "seirm"])
    parser.add_argument("--device", default="cpu", help="where the parties keep their shares")
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--degree", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each version (median)")
    parser.add_argument("--baseline", default="dd4eaa1", help="git revision to compare with")
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--million-steps", type=int, default=10, help="0: skip that row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frac-bits", type=int, default=16, help="fixed-point fractional bits")
    parser.add_argument("--scaling", type=int, default=1, help="0: skip the scaling table")
    parser.add_argument("--output", default=None, help="default benchmarks/results/secure*.md")
    args = parser.parse_args()
    suffix = "" if args.device == "cpu" else f"_{torch.device(args.device).type}"
    output = args.output or f"benchmarks/results/secure{suffix}.md"
    lines = [
        f"# Secure SIR / SEIRM, 2 parties in separate processes, shares on {args.device}",
        "",
        f"Before: {_load()}.",
        "",
    ]
    current = ROOT / "src"
    mib = 1024**2
    with tempfile.TemporaryDirectory() as tmp:
        old = _checkout(args.baseline, Path(tmp)) if args.repeats else None
        if old is not None:
            lines += [
                f"## Against {args.baseline} ({args.agents:,} agents x {args.steps} steps, "
                f"median of {args.repeats})",
                "",
                "| model | version | secure steps | ratio to old | bytes sent / agent / step | "
                "dealer bytes / agent / step | owner bytes / agent / step | final R |",
                "|---|---|---:|---:|---:|---:|---:|---:|",
            ]
        for model in args.models if old is not None else ():
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for _ in range(args.repeats):  # alternate, so that drifting load hits both
                runs["old"].append(_child(old, model, args.agents, args.degree, args.steps))
                runs["new"].append(_child(current, model, args.agents, args.degree, args.steps))
            base = statistics.median(r["seconds"] for r in runs["old"])
            for name, label in (("old", args.baseline), ("new", "this checkout")):
                rs = runs[name]
                secs = statistics.median(r["seconds"] for r in rs)
                finals = ", ".join(f"{x['final_R']:.0f}" for x in rs)
                r = rs[0]
                lines.append(
                    f"| {model.upper()} | {label} | {secs:.1f} s | {secs / base:.2f}x | "
                    f"{_per_agent(r['step_bytes'], args.agents):.0f} | "
                    f"{_per_agent(r['step_dealer'], args.agents):.0f} | "
                    f"{_per_agent(r['step_owner'], args.agents):.0f} | "
                    f"{finals} |"
                )
        lines.append("")
    if args.million_steps:
        r = _child(current, "sir", args.million, args.degree, args.million_steps)
        steps = args.million_steps
        lines += [
            f"## SIR with {args.million:,} private agents x {steps} steps (this checkout)",
            "",
            "| quantity | value |",
            "|---|---:|",
            f"| secure steps (party 0) | {r['seconds']:.1f} s "
            f"({r['seconds'] / steps:.2f} s per step) |",
            f"| launch to results (spawn, graph, setup, run) | {r['launch_seconds']:.1f} s |",
            f"| peak memory per party process | "
            f"{', '.join(f'{m:,.0f} MiB' for m in r['peak_rss_mib_parties'])} |",
            f"| bytes sent per party per step | "
            f"{statistics.median(r['step_bytes']) / mib:.1f} MiB |",
            f"| bytes per agent per step (sent / dealer / owner) | "
            f"{_per_agent(r['step_bytes'], args.million):.0f} / "
            f"{_per_agent(r['step_dealer'], args.million):.0f} / "
            f"{_per_agent(r['step_owner'], args.million):.0f} |",
            "",
        ]
    lines += _reproducible_check(args)
    if args.scaling:
        lines += ["## Bytes per party per step (in-process parties, 2-step run)", ""]
        lines += ["| agents | mean degree | edges | bytes per party | bytes per agent |"]
        lines += ["|---:|---:|---:|---:|---:|"]
        for agents in (10_000, 20_000, 40_000):
            for degree in (4.0, 40.0):
                edges, sent = scaling(agents, degree)
                lines.append(
                    f"| {agents:,} | {degree:g} | {edges:,} | {sent:,} | {sent / agents:.1f} |"
                )
        lines.append("")
    lines += [f"After: {_load()}.", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"written to {out}")


def _reproducible_check(args: argparse.Namespace) -> list[str]:
    """A seeded SIR run (reproducible, not private) against plaintext ``simulate``."""
    owner = ProtocolInputs(protocol("sir"), args.agents, 20, seed=args.seed)
    results = launch(
        party,
        parties=2,
        seed=args.seed,
        owner=owner,
        frac_bits=args.frac_bits,
        args=("sir", args.agents, args.degree, args.steps, args.seed),
        timeout=1800,
        device=args.device,
        policy=LeakagePolicy(),
        force_insecure=True,  # seeded (reproducible) randomness: to check counts = plaintext
    )
    r = results[0]
    graph = population("sir", args.agents, args.degree, args.seed)
    times = []
    for _ in range(3):  # the first run builds the CSR: take the median of three
        plain_start = time.perf_counter()
        plain = simulate(
            protocol("sir"), graph, args.steps, initial_infected=20, seed=args.seed,
            dtype=torch.float64,
        )  # fmt: skip
        times.append(time.perf_counter() - plain_start)
    plain_seconds = statistics.median(times)
    same = all(r["counts"][k] == v.tolist() for k, v in {**plain.counts, **plain.flows}.items())
    return [
        f"## Reproducible mode (seeded, not private): SIR, {args.agents:,} agents x "
        f"{args.steps} steps",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| secure run (party 0, steps only) | {r['seconds']:.1f} s |",
        f"| plaintext simulate on the CPU, same run (median of 3) | {plain_seconds:.2f} s |",
        f"| rounds per step | {statistics.median(r['step_rounds']):.0f} |",
        f"| final recovered (secure / plaintext) | {r['counts']['R'][-1]:.0f} / "
        f"{float(plain.counts['R'][-1]):.0f} |",
        f"| daily counts equal to plaintext | {same} |",
        f"| openings by kind | {r['openings']} |",
        "",
    ]


if __name__ == "__main__":
    main()
