"""Memory at scale: SIR and SEIRM, 1e7 agents x 100 steps, forward and forward + backward.

Run ``python benchmarks/memory_scale.py`` (10,000,000 agents, mean degree 10, 100 daily steps;
about half an hour on 2 cores, peak under 13 GiB); ``--num-agents 1000000`` is a quick check.
Prints a Markdown table and writes it to ``--output``.

Every case runs in a fresh child process, so its peak resident memory is its own; the parent
stops a child whose RSS passes ``--max-rss-gib`` (default: what the machine has available at
the start, less 2 GiB), so that a case that does not fit fails alone instead of the machine.

* graph: ``erdos_renyi(N, 10)`` (G(n, m), ``N * 10`` directed edges); SEIRM's agents also get
  an ``age_group`` attribute (0..7, Franklin County shares of the bundled GradABM population,
  as in ``seirm_step.py``), because a ``SyntheticPopulation`` of 1e7 agents is a benchmark of
  its own (``datasets.py``). The graph, its CSR and (for backward) the transposed CSR are built
  before the run; their memory is reported separately ("graph").
* forward: ``simulate`` under ``no_grad``, observables only (no per-agent state kept).
* forward + backward: ``simulate(..., checkpoint=K)`` (the step is recomputed in blocks of
  ``K`` during backward; a block keeps its starting state, as bool where it is 0 / 1), then
  ``backward()`` of new infections + final R (SIR) or new infections + final deaths (SEIRM),
  straight-through, to every parameter. ``--no-checkpoint`` adds the same without
  checkpointing (100 steps of it need about 2 GiB per million agents).

SIR(0.05, 0.1), 1 initial infection per 10,000 agents; SEIRM(R = 2.5, mortality 0.02), 1 per
1,000; float32 states; the allocator is glibc's unless ``MALLOC_*`` / ``GLIBC_TUNABLES`` say
otherwise (the table records them; see benchmarks/README.md on why it matters at 1e6).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

AGE_SHARES = (14468, 8137, 7865, 9450, 12140, 10983, 4588, 3285)  # Franklin, 70,916 agents
CASES = {
    "forward": "forward (no_grad, observables only)",
    "backward": "forward + backward (checkpoint every {k} steps)",
    "backward_full": "forward + backward (no checkpointing)",
}
GIB = 2**30


def status_gib(field: str, pid: int | str = "self") -> float:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in GiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith(field)) / 2**20


def available_gib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("MemAvailable")) / 2**20


def reset_peak() -> None:
    """Hand freed heap back to the OS, then restart VmHWM from the current RSS (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def graph_for(model: str, n: int, mean_degree: float):
    import torch

    from lpm_graph.datasets import erdos_renyi

    graph = erdos_renyi(n, mean_degree, seed=0)
    if model == "seirm":
        gen = torch.Generator().manual_seed(1)
        shares = torch.tensor(AGE_SHARES, dtype=torch.float64)
        age = torch.multinomial(shares / shares.sum(), n, replacement=True, generator=gen)
        graph.set_node_attrs("agent", age_group=age)
    return graph


def tensor_bytes(graph) -> tuple[int, int]:
    """Bytes of the distinct tensor storages of the graph's stores, and of its cached CSRs."""
    import torch

    def collect(values, seen: dict[int, int]) -> None:
        for value in values:
            if isinstance(value, dict):
                collect(value.values(), seen)
            elif torch.is_tensor(value):
                storage = value.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()

    stores: dict[int, int] = {}
    for store in [*graph.data.node_stores, *graph.data.edge_stores]:
        collect(store.values(), stores)
    csrs: dict[int, int] = {}
    for csr in graph._csr.values():
        for part in (csr, csr._t):
            if part is not None:
                collect(vars(part).values(), csrs)
    return sum(stores.values()), sum(v for k, v in csrs.items() if k not in stores)


def child(args) -> dict:
    import torch

    from lpm_graph import simulate
    from lpm_graph.protocols import SEIRM, SIR

    torch.set_num_threads(args.threads)
    n, steps, case = args.num_agents, args.steps, args.case
    base = status_gib("VmRSS")
    t0 = time.perf_counter()
    graph = graph_for(args.model, n, args.mean_degree)
    csr = graph.csr()
    if case != "forward":
        csr.t  # noqa: B018  (the transposed CSR that backward uses, built once)
    build = time.perf_counter() - t0
    if args.model == "sir":
        model, seeds, last = SIR(0.05, 0.1, dt=1.0, order="infect_first"), n // 10_000, "R"
    else:
        model, seeds, last = SEIRM(2.5, 0.02), n // 1_000, "M"
    reset_peak()
    before = status_gib("VmRSS")
    kernel0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    t0 = time.perf_counter()
    if case == "forward":
        with torch.no_grad():
            traj = simulate(model, graph, steps, initial_infected=max(seeds, 1), seed=1)
    else:
        checkpoint = args.checkpoint if case == "backward" else None
        traj = simulate(model, graph, steps, initial_infected=max(seeds, 1), seed=1,
                        checkpoint=checkpoint)  # fmt: skip
        (traj.flows["infections"].sum() + traj.counts[last][-1]).backward()
    wall = time.perf_counter() - t0
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    run_kernel = cpu.ru_stime - kernel0
    stores, csrs = tensor_bytes(graph)
    return {
        "model": args.model,
        "case": case,
        "n": n,
        "edges": graph.num_edges(),
        "wall": wall,
        "build": build,
        "graph_rss": before - base,
        "graph_store_bytes": stores,
        "graph_csr_bytes": csrs,
        "run_peak": status_gib("VmHWM") - before,
        "peak": cpu.ru_maxrss / 2**20,
        "sys_s": cpu.ru_stime,
        "run_sys_s": run_kernel,
        "infected": float(traj.counts["S"][0] - traj.counts["S"][-1]),
        "grads": {k: float(p.grad) for k, p in model.named_parameters() if p.grad is not None},
        "torch": torch.__version__,
    }


def run_child(args, model: str, case: str, src: Path | None = None) -> dict:
    """One case in a child process; ``src``: import lpm_graph from there (an earlier version)."""
    flags = {"--num-agents": args.num_agents, "--steps": args.steps, "--threads": args.threads,
             "--checkpoint": args.checkpoint, "--mean-degree": args.mean_degree}  # fmt: skip
    cmd = [sys.executable, __file__, "--child", "--model", model, "--case", case]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(
        cmd + [str(x) for kv in flags.items() for x in kv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watched = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError, StopIteration):
            watched = max(watched, status_gib("VmRSS", proc.pid))
        if watched > args.max_rss_gib:
            proc.kill()
            proc.communicate()
            error = f"stopped: RSS passed --max-rss-gib {args.max_rss_gib:.1f}"
            return {"model": model, "case": case, "error": error, "version": label(src)}
        time.sleep(0.1)
    out, err = proc.communicate()
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        tail = (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"model": model, "case": case, "error": tail, "version": label(src)}
    return {**json.loads(lines[-1]), "version": label(src)}


def label(src: Path | None) -> str:
    return "this checkout" if src is None else f"before ({src})"


def table(args, results: list[dict]) -> str:
    n = args.num_agents
    ok = [r for r in results if "error" not in r]
    torch_version = ok[0]["torch"] if ok else "?"
    malloc = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    lines = [
        f"N = {n:,}, mean degree {args.mean_degree:g} (G(n, m)), {args.steps} steps, float32 "
        f"states, torch {torch_version} with {args.threads} threads, one run per case, each in "
        f"its own process; allocator: {malloc or 'glibc defaults'}",
        "",
        "| model | case | code | time (s) | kernel (s) | kernel % | agent-steps/s | "
        "peak RSS (GiB) | bytes / agent | graph (GiB) | run (GiB) | run bytes / agent |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        what = CASES[r["case"]].format(k=args.checkpoint)
        head = f"| {r['model'].upper()} | {what} | {r['version']} |"
        if "error" in r:
            lines.append(f"{head} {r['error']} | | | | | | | | |")
            continue
        lines.append(
            f"{head} {r['wall']:.1f} | {r['run_sys_s']:.1f} | "
            f"{100 * r['run_sys_s'] / r['wall']:.0f} % | {n * args.steps / r['wall']:.3g} | "
            f"{r['peak']:.2f} | {r['peak'] * GIB / n:.0f} | {r['graph_rss']:.2f} | "
            f"{r['run_peak']:.2f} | {r['run_peak'] * GIB / n:.0f} |"
        )
    if ok:
        first = ok[0]
        lines += [
            "",
            f"- {first['edges']:,} directed edges; graph build (not in the times): "
            + ", ".join(f"{r['model']} {r['case']} {r['build']:.0f} s" for r in ok),
            "- peak RSS: the child's whole life (interpreter, imports, graph build, run); "
            "bytes / agent = peak RSS / N",
            "- graph: RSS after building the graph, its CSR and (backward cases) the "
            "transposed CSR, less the RSS after imports. Tensors held: "
            + ", ".join(
                f"{r['model']} {r['case']} {r['graph_store_bytes'] / GIB:.2f} GiB edge list and "
                f"attributes + {r['graph_csr_bytes'] / GIB:.2f} GiB CSR"
                for r in ok
            ),
            "- run: peak RSS during the run less the RSS before it (the run's own memory); "
            "kernel (s): system CPU time of the run alone (page faults, mapping and unmapping "
            "memory), summed over threads; kernel % = kernel time / wall time",
            "- agents ever infected: "
            + ", ".join(f"{r['model']} {r['case']} {r['infected']:,.0f}" for r in ok),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-agents", type=int, default=10_000_000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--mean-degree", type=float, default=10.0)
    p.add_argument("--checkpoint", type=int, default=10, help="steps per checkpointed block")
    p.add_argument("--models", nargs="+", default=["sir", "seirm"], choices=["sir", "seirm"])
    p.add_argument("--cases", nargs="+", default=["forward", "backward"], choices=list(CASES))
    p.add_argument("--no-checkpoint", action="store_true", help="add the backward_full case")
    p.add_argument("--max-rss-gib", type=float, default=None, help="stop a child above this")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/memory_scale.md"))
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        help="the src/ folder of an earlier version (e.g. a git worktree): every case runs "
        "with it first, then with this checkout, alternately",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="sir", help=argparse.SUPPRESS)
    p.add_argument("--case", default="forward", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    if args.max_rss_gib is None:
        args.max_rss_gib = available_gib() - 2
    cases = args.cases + (["backward_full"] if args.no_checkpoint else [])
    results = []
    for model in args.models:
        for case in dict.fromkeys(cases):
            for src in ([args.before] if args.before else []) + [None]:
                print(f"{model} {case} ({label(src)}): N = {args.num_agents:,} ...", flush=True)
                results.append(run_child(args, model, case, src))
                print(json.dumps(results[-1]), flush=True)
    text = table(args, results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
