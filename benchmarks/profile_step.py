"""Where one simulation step spends its time: ATen ops per step, host reads, torch.compile.

Run ``python benchmarks/profile_step.py`` (1,000,000 agents; about a minute on 2 cores, a third of
it inductor compiling); ``--num-agents 100000`` is a quick check, ``--no-compile`` skips part 2.
Prints a Markdown report and writes it to ``--output``.

Part 1, the step under ``torch.profiler`` (CPU activities, and CUDA with ``--device cuda``):

* SIR: ``SIR(0.05, 0.1, dt=1, order="infect_first")`` on ``erdos_renyi(N, 10, seed=0)``,
  forward under ``no_grad``;
* SEIRM: ``SEIRM(2.5, 0.02)`` on the population of ``benchmarks/seirm_step.py``, forward under
  ``no_grad``, and forward + backward of ``flows["infections"].sum() + counts["M"][-1]``
  (straight-through).

Every case starts from a mid-epidemic state: seeded (SIR 100 agents, SEIRM 1%), then
``--warmup`` steps under ``no_grad``, which also build the cached CSR. From that state a run of
``K + 1`` steps and a run of 1 step (``K = --steps``) are each profiled once and timed
(median of ``--repeats``, profiler off); every figure "per step" is (run of ``K + 1``) minus
(run of 1), divided by ``K``. The difference cancels what one call costs once (Simulator
set-up, the first observation, assembling the trajectory, the loss and the end of backward)
and keeps what the step loop repeats: the phases, the random draws and the per-step
observables (sums over agents). Per ATen op: self time per step (time inside the op, not in
the ops it calls; on CPU an intra-op parallel kernel counts its wall time, once), calls per
step and share of the ATen self time of the step. ``outside ATen`` = wall time per step
(profiler off) minus ATen self time per step (profiler on): Python, dispatch and the
profiler's own cost, so a rough figure. Host reads: ops that bring a value to the host or
have a data-dependent output shape (``aten::_local_scalar_dense``, the body of ``.item()``,
``bool()`` and ``int()`` on a tensor, ``aten::nonzero`` ...); on a GPU each one waits for
the device, and the step loop should have none on a GPU. On the CPU, SIR's event-driven force
of infection (``lpm_graph.ops.IncrementalSum``) reads the number of changed agents each step by
design (a ``nonzero`` and a few scalars; a host read waits for nothing there), and is off on
other devices. Minor page faults and system CPU time per step
(``getrusage``, profiler off) show how much of the step goes to memory fresh from the OS: an
agent-sized temporary that the allocator maps anew is faulted in page by page, and the op that
first writes it is charged for that time.

Part 2, ``torch.compile`` (inductor; on CPU it needs a C++ compiler) on the SIR step, on the
CPU whatever ``--device``:

* the element-wise rest of a step (everything after the sparse product), written here as
  :func:`sir_update` after ``protocols/sir.py`` (Infection, Recovery) and ``StepContext.flow``
  in ``protocols/base.py``, checked equal to the library's step first, with and without the
  per-step totals of the recorder, compiled with ``dynamic=False``;
* the library's whole step, ``SIR.step``: ``torch._dynamo.explain`` (graphs, graph breaks and
  their reasons), then compiled and run for ``--steps`` steps.

For each: eager and compiled medians, compile time (the first call), and whether every output
is bit-identical to eager (``torch.equal``). A failure to compile is reported, not raised.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from seirm_step import population  # noqa: E402

from lpm_graph.protocols.base import StepContext  # noqa: E402

HOST_READS = (
    "aten::_local_scalar_dense",  # .item(), bool(t), int(t), float(t)
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::equal",  # torch.equal: a bool on the host
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
)
Profile = dict[str, tuple[float, float, float]]  # op -> (self CPU us, self device us, calls)


# ----------------------------------------------------------------------------------- part 1


def cases(args) -> dict[str, tuple[Callable[[int], object], int]]:
    """Per case: a run of ``steps`` steps from its mid-epidemic state, and its agent count."""
    from lpm_graph import simulate
    from lpm_graph.datasets import erdos_renyi
    from lpm_graph.protocols import SEIRM, SIR

    n, device = args.num_agents, torch.device(args.device)
    sir_graph = erdos_renyi(n, 10, seed=0).to(device)
    sir = SIR(0.05, 0.1, dt=1.0, order="infect_first").to(device)
    seirm_graph = population(n, 0).to(device)
    seirm = SEIRM(2.5, 0.02).to(device)
    with torch.no_grad():
        sir_start = simulate(sir, sir_graph, args.warmup, initial_infected=100, seed=1)
        seirm_start = simulate(seirm, seirm_graph, args.warmup, initial_infected=0.01, seed=1)

    def sir_forward(steps: int) -> object:
        with torch.no_grad():
            return simulate(sir, sir_graph, steps, state=sir_start.final_state, seed=2)

    def seirm_forward(steps: int) -> object:
        with torch.no_grad():
            return simulate(seirm, seirm_graph, steps, state=seirm_start.final_state, seed=2)

    def seirm_backward(steps: int) -> object:
        seirm.zero_grad(set_to_none=True)
        traj = simulate(seirm, seirm_graph, steps, state=seirm_start.final_state, seed=2)
        (traj.flows["infections"].sum() + traj.counts["M"][-1]).backward()
        return traj

    return {
        "SIR forward (no_grad)": (sir_forward, n),
        "SEIRM forward (no_grad)": (seirm_forward, n),
        "SEIRM forward + backward (straight-through)": (seirm_backward, n),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def profiled(fn: Callable[[], object], device: str) -> Profile:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    return {
        e.key: (e.self_cpu_time_total, e.self_device_time_total, e.count)
        for e in prof.key_averages()
    }


def measured(fn: Callable[[], object], repeats: int, device: str) -> list[float]:
    """Medians of ``fn()``'s wall time, minor page faults and system CPU time (profiler off)."""
    runs = []
    for _ in range(repeats):
        sync(device)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        sync(device)
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        runs.append((t1 - t0, r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime))
    return [statistics.median(x) for x in zip(*runs)]


def per_step(long: Profile, short: Profile, k: int) -> Profile:
    """(long run - short run) / k per op; ops called as often in both (per-call costs) dropped."""
    out = {}
    for op, (cpu, dev, calls) in long.items():
        cpu0, dev0, calls0 = short.get(op, (0.0, 0.0, 0))
        if calls != calls0:
            out[op] = ((cpu - cpu0) / k, (dev - dev0) / k, (calls - calls0) / k)
    return out


def profile_case(fn: Callable[[int], object], args) -> dict:
    k, device = args.steps, args.device
    fn(k + 1)  # warm: allocator, caches built on first use (the transposed CSR)
    long = profiled(lambda: fn(k + 1), device)
    short = profiled(lambda: fn(1), device)
    runs = measured(lambda: fn(k + 1), args.repeats, device)
    run = measured(lambda: fn(1), args.repeats, device)
    wall, faults, system = ((a - b) / k for a, b in zip(runs, run))
    return {"ops": per_step(long, short, k), "wall": wall, "faults": faults, "system": system}


def case_report(name: str, n: int, result: dict, args) -> list[str]:
    ops, wall = result["ops"], result["wall"]
    cuda = args.device.startswith("cuda")
    aten = {op: v for op, v in ops.items() if op.startswith("aten::")}
    total = sum(v[0] for v in aten.values())
    reads = {op: ops[op][2] for op in HOST_READS if op in ops}
    lines = [
        f"## {name}",
        "",
        f"- wall time per step (profiler off): {wall * 1e3:.2f} ms ({n / wall:.3g} agent-steps/s)",
        f"- ATen self time per step (profiler on): {total / 1e3:.2f} ms in "
        f"{sum(v[2] for v in aten.values()):.1f} op calls; outside ATen (Python, dispatch, "
        f"profiler): {wall * 1e3 - total / 1e3:.2f} ms",
        f"- minor page faults per step (profiler off): {result['faults']:,.0f} "
        f"({result['faults'] * resource.getpagesize() / 2**20:.0f} MiB of fresh pages), "
        f"system CPU time {round(result['system'] * 1e3, 1) + 0.0:.1f} ms",  # + 0.0: no "-0.0"
    ]
    if cuda:
        device_total = sum(v[1] for v in aten.values())
        lines.append(
            f"- device self time per step (kernels of ATen ops): {device_total / 1e3:.2f} ms"
        )
    lines += [
        "- host reads per step: "
        + (", ".join(f"`{op}` {c:g}" for op, c in reads.items()) if reads else "0"),
        "",
        "| op | self CPU ms / step | "
        + ("self CUDA ms / step | " if cuda else "")
        + "calls / step | share of ATen self CPU time |",
        "|---|---:|" + ("---:|" if cuda else "") + "---:|---:|",
    ]
    rows = sorted(aten.items(), key=lambda kv: -kv[1][1 if cuda else 0])
    shown, rest = rows[: args.top], [v for _, v in rows[args.top :]]
    if rest:
        merged = tuple(sum(v[j] for v in rest) for j in range(3))
        shown.append((f"{len(rest)} other ops", merged))
    for op, (cpu, dev, calls) in shown:
        device_col = f" {dev / 1e3:.3f} |" if cuda else ""
        label = f"`{op}`" if op.startswith("aten::") else op
        share = f"{cpu / total:.1%}" if total > 0 else ""
        lines.append(f"| {label} | {cpu / 1e3:.3f} |{device_col} {calls:.1f} | {share} |")
    return [*lines, ""]


# ----------------------------------------------------------------------------------- part 2


def sir_update(
    contacts: Tensor,
    s: Tensor,
    i: Tensor,
    r: Tensor,
    u_infection: Tensor,
    u_recovery: Tensor,
    rate_dt: Tensor,
    stay: Tensor,
) -> tuple[Tensor, ...]:
    """The element-wise rest of one stochastic SIR step (``order="infect_first"``).

    ``contacts`` is the sparse product's output (infectious in-neighbours per agent, ``[N]``);
    then, as :class:`~lpm_graph.protocols.sir.Infection` (the scalar rate is applied after the
    product), :class:`~lpm_graph.protocols.sir.Recovery` and ``StepContext.flow`` do: the
    hazard, the draws ``1[u >= survival]`` and the additive updates. Recovery draws from the
    agents infectious at the start of the step. Returns the new ``S, I, R`` and the flows.
    """
    escape = torch.exp(-(contacts * rate_dt))
    new = torch.where(u_infection >= escape, s, 0)
    recovered = torch.where(u_recovery >= stay, i, 0)
    return s - new, i + new - recovered, r + recovered, new, recovered


def sir_update_totals(*args: Tensor) -> tuple[Tensor, ...]:
    """:func:`sir_update` and the recorder's per-step totals (counts and flows)."""
    out = sir_update(*args)
    return *out, *(x.sum(0) for x in out)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def identical(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> str:
    """``yes``, or how many elements of which outputs differ."""
    diff = [
        f"output {k}: {int((x != y).sum())} of {x.numel()}"
        for k, (x, y) in enumerate(zip(a, b))
        if not torch.equal(x, y)
    ]
    return "yes" if not diff else "no (" + "; ".join(diff) + ")"


def reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def compile_sir(args) -> dict:
    """torch.compile on the SIR step: the element-wise update, then the library's step."""
    from lpm_graph import simulate
    from lpm_graph.datasets import erdos_renyi
    from lpm_graph.layers.samplers import RandomStreams
    from lpm_graph.protocols import SIR
    from lpm_graph.protocols.sir import DRAWS

    n, reps = args.num_agents, args.compile_repeats
    graph = erdos_renyi(n, 10, seed=0)
    sir = SIR(0.05, 0.1, dt=1.0, order="infect_first")
    out: dict = {"update": [], "step": {}}
    with torch.no_grad():
        state = simulate(sir, graph, args.warmup, initial_infected=100, seed=1).final_state
        streams = RandomStreams(2)
        infection = sir.phases[0]
        contacts = infection.transmission(graph.csr(), state["I"], torch.ones(()))
        draws = streams.uniform(DRAWS, 0, (n,), state["S"].dtype)
        inputs = (
            contacts,
            state["S"],
            state["I"],
            state["R"],
            draws,  # infection and recovery share one draw per agent and step (SIR.DRAWS)
            draws,
            sir.transmission_rate * sir.dt,
            torch.exp(-sir.recovery_rate * sir.dt),
        )
        ctx = StepContext.begin(0, sir.dt, state, streams, "stochastic")
        library = sir.step(graph, state, ctx)
        flows = ctx.flows
        mirror = (library["S"], library["I"], library["R"], *flows.values())
        out["mirror"] = identical(sir_update(*inputs), mirror)
        for fn in (sir_update, sir_update_totals):
            eager = fn(*inputs)
            row = {"name": fn.__name__, "eager": median_ms(lambda: fn(*inputs), reps)}  # noqa: B023
            try:
                compiled = torch.compile(fn, dynamic=False)
                t0 = time.perf_counter()
                first = compiled(*inputs)
                row["compile"] = time.perf_counter() - t0
                row["compiled"] = median_ms(lambda: compiled(*inputs), reps)  # noqa: B023
                row["identical"] = identical(first, eager)
            except Exception as err:  # inductor needs a working C++ toolchain, among others
                row["error"] = reason(err)
            out["update"].append(row)
        out["step"] = compile_step(sir, graph, state, args)
    return out


def compile_step(sir, graph, state: dict[str, Tensor], args) -> dict:
    """``SIR.step`` under ``torch._dynamo.explain``, then compiled (``dynamic=False`` and the
    default, automatic dynamic) and run for ``--steps`` steps."""
    import torch._dynamo

    from lpm_graph.layers.samplers import RandomStreams

    streams = RandomStreams(2)

    def step(state: dict[str, Tensor], t: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        ctx = StepContext.begin(t, sir.dt, state, streams, "stochastic")
        return sir.step(graph, state, ctx), ctx.flows

    out: dict = {"runs": []}
    try:
        torch._dynamo.reset()
        e = torch._dynamo.explain(step)(state, 0)
        out["explain"] = f"{e.graph_count} graph(s), {e.graph_break_count} graph break(s)"
    except Exception as err:
        out["explain"] = f"failed: {reason(err)}"
    for dynamic in (False, None):
        out["runs"].append(run_compiled(step, state, dynamic, args.steps))
    return out


def run_compiled(
    step: Callable, state: dict[str, Tensor], dynamic: bool | None, steps: int
) -> dict:
    """The compiled step against the eager one, step by step from ``state``."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    out: dict = {"dynamic": dynamic}
    try:
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(step, dynamic=dynamic)
        t0 = time.perf_counter()
        compiled(state, 0)
        out["compile"] = time.perf_counter() - t0
        first = counters["frames"]["total"]
        eager_times, compiled_times, same, current = [], [], True, state
        for t in range(steps):
            t0 = time.perf_counter()
            want = step(current, t)
            eager_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = compiled(current, t)
            compiled_times.append(time.perf_counter() - t0)
            same = same and all(
                torch.equal(want[j][key], got[j][key]) for j in (0, 1) for key in want[j]
            )
            current = want[0]
        out["eager"] = statistics.median(eager_times) * 1e3
        out["compiled"] = statistics.median(compiled_times) * 1e3
        out["slowest"] = max(compiled_times) * 1e3
        out["identical"] = "yes" if same else "no"
        out["frames"] = (first, counters["frames"]["total"] - first)
    except Exception as err:
        out["error"] = reason(err)
    breaks: dict[str, list] = {}  # first line of the reason -> [count, a debug context]
    for text, count in counters["graph_break"].items():
        lines = text.strip().splitlines()
        debug = next((x.strip() for x in lines if "Developer debug context:" in x), "")
        debug = debug.removeprefix("Developer debug context:").split(" [")[0].strip()[:100]
        entry = breaks.setdefault(lines[0], [0, debug])
        entry[0] += count
    out["breaks"] = breaks
    return out


def judge(speed: float) -> str:
    word = "helps" if speed > 1.1 else "no gain" if speed > 0.9 else "slower"
    return f"{speed:.2f}x ({word})"


def compile_report(res: dict, args) -> list[str]:
    n = args.num_agents
    lines = [
        f"## torch.compile on the SIR step (inductor, CPU, N = {n:,})",
        "",
        f"`sir_update` (this file) equals the library's step on the same inputs: {res['mirror']}",
        "",
        "| function | eager ms | compiled ms | speed-up | compile s | bit-identical to eager |",
        "|---|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for row in res["update"]:
        if "error" in row:
            lines.append(f"| `{row['name']}` | {row['eager']:.2f} | failed | | | {row['error']} |")
            verdicts.append(f"`{row['name']}` failed to compile")
            continue
        speed = row["eager"] / row["compiled"]
        lines.append(
            f"| `{row['name']}` | {row['eager']:.2f} | {row['compiled']:.2f} | {speed:.2f}x | "
            f"{row['compile']:.1f} | {row['identical']} |"
        )
        verdicts.append(f"`{row['name']}` {judge(speed)}, bit-identical: {row['identical']}")
    step = res["step"]
    lines += [
        "",
        "compile s: the first call, cold (an empty inductor cache); the process's first "
        "compile also loads inductor itself.",
        "",
        f"Whole step, `SIR.step` (eager against compiled, steps 0 to {args.steps - 1}; the "
        "first call compiles):",
        "",
        f"- `torch._dynamo.explain` (one call): {step['explain']}",
    ]
    for run in step["runs"]:
        what = f"`dynamic={run['dynamic']}`"
        if "error" in run:
            lines.append(f"- {what}: failed: {run['error']}")
            verdicts.append(f"whole step ({what}) failed: {run['error']}")
        else:
            speed = run["eager"] / run["compiled"]
            first, more = run["frames"]
            lines.append(
                f"- {what}: eager {run['eager']:.2f} ms, compiled {run['compiled']:.2f} ms "
                f"({speed:.2f}x; slowest compiled step {run['slowest']:.1f} ms), first call "
                f"{run['compile']:.1f} s, frames converted by dynamo: {first} in the first call, "
                f"{more} more (recompiles) in the loop, bit-identical: {run['identical']}"
            )
            same = run["identical"]
            verdicts.append(f"whole step ({what}) {judge(speed)}, bit-identical: {same}")
        if run["breaks"]:
            lines.append("  graph breaks (count: reason, debug context):")
            lines += [f"  - {c}: {text} ({ctx})" for text, (c, ctx) in run["breaks"].items()]
    lines += ["", "Verdict: " + "; ".join(verdicts) + ".", ""]
    return lines


# ----------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-agents", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=10, help="K: steps profiled per case")
    p.add_argument("--warmup", type=int, default=20, help="steps to the mid-epidemic state")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (profiler off)")
    p.add_argument("--compile-repeats", type=int, default=20, help="timed calls, part 2")
    p.add_argument("--top", type=int, default=20, help="ops shown per case")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-compile", action="store_true", help="skip part 2 (torch.compile)")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/profile_step.md"))
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    torch.set_num_threads(args.threads)
    lines = [
        f"# One step, profiled: N = {args.num_agents:,}, {args.device}, torch {torch.__version__}"
        f" with {args.threads} threads",
        "",
        f"Per step = (run of {args.steps + 1} steps - run of 1 step) / {args.steps}, from a "
        f"mid-epidemic state ({args.warmup} steps in); wall times are medians of "
        f"{args.repeats}.",
        "",
    ]
    for name, (fn, n) in cases(args).items():
        print(f"profiling {name} ...", flush=True)
        lines += case_report(name, n, profile_case(fn, args), args)
    if not args.no_compile:
        print("torch.compile ...", flush=True)
        # a fresh inductor cache: compile times are cold, with no hit from an earlier run
        cache = tempfile.mkdtemp(prefix="profile_step_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            lines += compile_report(compile_sir(args), args)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    text = "\n".join(lines)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
