"""Scale: agent-steps/s and peak memory of lpm-graph's SIR and SEIRM next to Starsim, Covasim
and AgentTorch at 1e5, 1e6 and 1e7 agents, with a memory-bandwidth roofline of our SIR step.

Run ``python benchmarks/scale.py`` (sizes 1e5, 1e6, 1e7); ``--sizes 1e5 1e6`` stops at a million.
Every measurement runs in a fresh child process, one at a time, so that its peak resident
memory (VmHWM of that process) is its own. Writes ``--output`` (Markdown,
``benchmarks/results/scale.md``), a log-log plot of agent-steps/s against agents (``.png``
beside it) and the raw results (``.json``); git ignores ``benchmarks/results/``.

What runs at each size ``N`` (``--repeats``: median of 3 at N <= 1e5, 1 above):

* lpm-graph SIR, forward: ``simulate(SIR(0.05, 0.1, dt=1, order="infect_first"), G, days,
  initial_infected=100, seed=1)`` under ``no_grad`` (stochastic, observables only) on
  ``erdos_renyi(N, 10)``; graph build and a 2-step warm-up (it builds the CSR and its
  transpose) are not timed.
  With ``--threads`` torch threads (default all cores), and again with one thread, to compare
  core for core with Starsim.
* Starsim SIR: ``sir_scale.run_starsim``, the same SIR (per-contact daily probability,
  infectious-period distribution, seeding, ``p_death = 0``) on ``RandomNet`` with the same N
  and mean degree, the same days (it runs days + 1 steps); its docstring gives the matching.
  Its JIT warm-up and ``sim.init()`` (people, network) are not timed. Single-threaded numba.
* lpm-graph SEIRM on ``seirm_step.population(N)`` (U{5..10} partners each, undirected, mean
  degree 15, Franklin age shares): ``SEIRM(2.5, 0.02)``, ``--seirm-steps`` days from 1%
  infected, (a) forward under ``no_grad``, (b) forward + backward of new infections + final
  deaths (straight-through). ``--checkpoint k`` passes ``checkpoint=k`` to the Simulator
  (recompute every block of ``k`` steps in backward instead of storing it); it is off by
  default because at 10 steps it saves nothing and costs a forward: measured at 2e5 agents, the
  memory of the run beyond the graph was ~0.8 KB per agent at 10 steps with or without it
  (k = 5), and at 40 steps 3.2 KB without, 1.6 KB with k = 5 and 2.2 KB with k = 1. The graph
  (edge list, CSR and the transpose backward needs) holds ~36 bytes per directed edge.
* AgentTorch 0.6.0's COVID model: ``agenttorch_covid.py --child agenttorch`` on the same
  synthetic population and steps, forward and forward + backward (that script's docstring says
  what it takes to run AgentTorch: a stubbed LLM backend, a rewritten config, a network loader
  without its dense N x N matrix, no random isolation). Its memory grows by a copy of the state
  per substep (~0.9 GiB per step at 1e6).
* Covasim (``cv.Sim(pop_size=N, pop_type=--covasim-pop-type, n_days=days)``): not the same
  model (a full COVID ABM: variants, immunity, severity, testing), a reference for the speed of
  a full ABM at that size. Its default ``"random"`` network has 20 contacts per agent; the
  table gives the realised number. Covasim 4 runs on Starsim (numba, single-threaded).

Each row: median wall time, agent-steps/s (N x steps / time), peak RSS of the child process (the
whole process: imports, population, network and run; AgentTorch's is the VmHWM of its case,
from that case's start) and bytes per agent, and "other load", the mean number of cores that
other processes kept busy meanwhile (this machine is shared; above ~0.2 the time is suspect).
Before each child the driver waits up to ``--wait-quiet`` seconds for other processes to keep
at most ``--quiet-load`` cores busy (sampled over 2 s), then starts it anyway. A peer gets
``--peer-timeout`` seconds (ours ``--timeout``); then its row says "not finished in N s".
Before each child its peak is estimated from the smaller sizes already measured (a line through
the last two; proportional above the interpreter's ~0.4 GiB from one; else from
``FALLBACK_BYTES_PER_AGENT``, measured on this machine at 1e6) and the child is skipped with
that reason when the estimate exceeds MemAvailable minus ``--memory-margin``; a child is
stopped if MemAvailable falls below ``--memory-floor`` while it runs (the machine is shared: an
out-of-memory kill could hit someone else's process). ``--estimate`` names sizes whose memory
is only estimated (default 1e7 when it is not in ``--sizes``).

Every child runs with glibc's allocator as a user's process does (the simulator reuses its
large temporaries itself, ``lpm_graph.ops.ReuseBuffers``); ``--raise-heap-thresholds`` runs
them with the raised mmap / trim thresholds that earlier figures used. ``--device cuda`` builds
lpm-graph's graphs on the CPU, moves them to the GPU and runs SIR and SEIRM there (no host
synchronisation in the step loop: the event-driven force of infection and the reuse of
blocks are CPU-only); each timed run ends with ``torch.cuda.synchronize()``, and the copy
bandwidth of the roofline is the GPU's. The peers stay on the CPU.

Roofline of the SIR step
------------------------
Copy bandwidth ``W``: ``dst.copy_(src)`` of a ``--bandwidth-mib`` float32 buffer with the same
torch threads, median of 10, counting bytes read + written (``2 x buffer / time``); measured
before the first size and after the last, and the higher of the two is used. Bytes moved per
SIR step ``B``: counted, not assumed. A whole run is repeated under a ``TorchDispatchMode``
that adds up, for every ATen kernel, the bytes of the tensors it reads and writes, and ``B`` is
(the ``days``-step run minus a 1-step run) / (``days`` - 1): the mean over steps 2..days,
because the step's traffic follows the epidemic. In a stochastic run the force of infection
``A I`` is updated from the agents whose ``I`` changed (``lpm_graph.ops.IncrementalSum``:
pushed along their out-edges, rows of the transposed CSR), and computed in full, as a sparse
product, only on a fresh start and on steps where more than 1/16 of the edges would move (11
of 100 days here, around the peak). Counting rules: views and the sparse-tensor wrapper, whose
outputs alias their inputs, move nothing; a sparse CSR x dense product counts its row
pointers, column indices and values, its output, and one gathered source value per edge
(``E x itemsize``) in place of its dense operand; ``index_select`` counts its index, the
elements it gathers and its output, and ``index_add_`` its index and source and a read and a
write of each element it adds to, not the whole tensors. The report lists the count per
kernel, so it follows the library as it changes. With float32 states and int32 indices it came
to ~174 B per agent at mean degree 10 when this was written: the element-wise work of the
draws, flows and observables ~136 B (``rand``; ``u >= escape``; ``where``; ``S - new``,
``I + new``, ``I - rec``, ``R + rec``; ``exp``; five sums), the full products ~16 B (12 B per
edge on the steps that run one), finding the changed agents ~10 B (``I != I_last``,
``nonzero``) and the pushes and the copy of the last sum ~12 B.

The roofline step time is ``B / W``; achieved fraction = ``(B / W) / t_step``, with ``t_step``
the measured forward time divided by the days (Python overhead and the random-number
generation included). The report also times the step's draws alone: torch's CPU generator
fills a tensor on one thread at ~0.35 G floats/s here (2.9 ms per 1e6), so the draws are
compute-bound (the library fills draws above 2^17 numbers in chunks on both cores: ~17 ms
instead of 30 at 1e7), and the fraction without them is given too. Gathers and scatters are
counted at their element size; where the vector they index no longer fits in the last-level
cache (40 MB at 1e7) each access moves a 64-byte line, so the real traffic of the full products
and the pushes is higher than ``B`` counts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from agenttorch_covid import AT_VERSION, cpu_sample, other_load  # noqa: E402
from sir_scale import (  # noqa: E402
    GAMMA,
    SEEDS,
    TAU,
    peak_rss_gib,
    reset_peak_rss,
    run_starsim,
    timed,
)

GIB = 2**30
# the marks the report checks ("Ratios the acceptance names"): those of the speed issue that
# set them last (SIR forward against Starsim at 1e6, the SIR step's fraction of the copy
# roofline, SEIRM forward + backward against AgentTorch at its largest size run)
MARKS = {"sir_vs_starsim": 10.0, "sir_roofline": 0.5, "seirm_fb_vs_agenttorch": 100.0}
BASELINE = 0.4 * GIB  # an interpreter with torch (or numba) imported, for memory estimates
KINDS = ("sir", "sir1", "starsim", "seirm_fwd", "seirm_fb", "agenttorch", "covasim")
PEERS = ("starsim", "agenttorch", "covasim")
# Whole-child peak RSS per agent measured on this machine at 1e6 (2 threads): only used to decide
# whether to start a child when no smaller size has been measured in this run.
FALLBACK_BYTES_PER_AGENT = {
    "sir": 1100,
    "sir1": 1100,
    "starsim": 800,
    "seirm_fwd": 1300,
    "seirm_fb": 2200,
    "agenttorch": 13200,
    "covasim": 1400,
}
LABELS = {
    ("sir", "a"): "lpm-graph SIR forward",
    ("sir1", "a"): "lpm-graph SIR forward, 1 thread",
    ("starsim", "a"): "Starsim SIR",
    ("seirm_fwd", "a"): "lpm-graph SEIRM forward",
    ("seirm_fb", "a"): "lpm-graph SEIRM forward + backward",
    ("agenttorch", "a"): "AgentTorch COVID forward",
    ("agenttorch", "b"): "AgentTorch COVID forward + backward",
    ("covasim", "a"): "Covasim",
}
STYLE = {  # colour, marker, line style per plotted line
    "lpm-graph SIR forward": ("C0", "o", "-"),
    "lpm-graph SIR forward, 1 thread": ("C0", "o", "--"),
    "Starsim SIR": ("C1", "s", "-"),
    "lpm-graph SEIRM forward": ("C2", "^", "-"),
    "lpm-graph SEIRM forward + backward": ("C2", "v", "--"),
    "AgentTorch COVID forward": ("C3", "D", "-"),
    "AgentTorch COVID forward + backward": ("C3", "d", "--"),
    "Covasim": ("C4", "P", "-"),
}


# ------------------------------------------------------------------------------ children
def child_bandwidth(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    src = torch.rand(args.bandwidth_mib * 2**20 // 4, device=args.device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    times = [timed(lambda: synchronized(dst.copy_(src)))[0] for _ in range(10)]
    moved = 2 * src.numel() * src.element_size()  # read + written
    t = statistics.median(times)
    return {"bytes": moved, "time": t, "bandwidth": moved / t, "best": moved / min(times)}


def count_step_bytes(run, steps: int) -> tuple[int | None, dict[str, int], str]:
    """Bytes the kernels of a step read and write, in all and per ATen kernel, averaged over
    the steps of a run: (a ``steps``-step run minus a 1-step run) / (``steps`` - 1). The
    average, because the event-driven force of infection moves bytes in proportion to the
    agents that changed state in the step (see the module docstring for what is counted)."""
    import collections

    import torch

    try:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
    except ImportError as err:  # a private torch module: report the step without the count
        return None, {}, f"not counted ({err})"

    def parts(t):
        if t.layout == torch.sparse_csr:
            return [t.crow_indices(), t.col_indices(), t.values()]
        return [t] if t.layout == torch.strided else []

    def size(t) -> int:
        return sum(x.numel() * x.element_size() for x in parts(t))

    def storages(t) -> set[int]:
        return {x.untyped_storage().data_ptr() for x in parts(t) if x.numel()}

    def indexed(name: str, args, out) -> int | None:
        """Gathers and scatters move the elements they touch, not the whole tensor."""
        if name == "index_select":  # read index, gather out.numel() elements, write out
            return size(args[2]) + 2 * size(out)
        if name in ("index_add_", "index_add"):  # read index and source, RMW the targets
            target, source = args[0], args[3]
            touched = source.numel() * target.element_size()
            copied = size(out) if name == "index_add" else 0  # the out-of-place copy
            return size(args[2]) + size(source) + 2 * touched + 2 * copied
        return None

    class Count(TorchDispatchMode):
        by_kernel: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name in ("empty", "empty_like", "empty_strided"):
                return out  # allocates; whoever fills it is counted
            if name == "uniform_":  # fills its output, reads nothing
                Count.by_kernel[name] += size(out)
                return out
            moved = indexed(name, args, out)
            if moved is not None:
                Count.by_kernel[name] += moved
                return out
            ins = [x for x in tree_flatten((args, kwargs))[0] if torch.is_tensor(x)]
            outs = [x for x in tree_flatten(out)[0] if torch.is_tensor(x)]
            read = set().union(*(storages(x) for x in ins)) if ins else set()
            written = [x for x in outs if not storages(x) <= read]
            if func._schema.is_mutable:
                written = outs  # in place: the output is an input, written
            elif outs and not written:
                return out  # a view or a wrapper: nothing moved
            sparse = [x for x in ins if x.layout == torch.sparse_csr]
            moved = sum(size(x) for x in written)
            for x in ins:
                gathered = sparse and x.layout == torch.strided and x.dim() > 0
                if gathered and x.shape[0] == sparse[0].shape[1]:
                    per_row = x.numel() // x.shape[0] * x.element_size()
                    moved += sparse[0].values().numel() * per_row  # the gather x[col]
                else:
                    moved += size(x)
            Count.by_kernel[name] += moved
            return out

    counts = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a dispatch mode sees its own thread: draw chunks in this one
    with torch.no_grad():
        for n in (1, steps):
            Count.by_kernel = collections.Counter()
            with Count():
                run(n)
            counts.append(Count.by_kernel)
    torch.set_num_threads(threads)
    step = {k: (counts[1][k] - counts[0][k]) // (steps - 1) for k in counts[1]}
    step = {k: v for k, v in sorted(step.items(), key=lambda kv: -kv[1]) if v}
    return sum(step.values()), step, f"counted per kernel, mean of steps 2-{steps}"


def random_draw_time(n: int, draws: int, device: str = "cpu") -> float:
    """Seconds for the step's ``draws`` draws of ``n`` numbers from the library's random
    streams (fresh generators, chunks filled in parallel), median of 5: the compute-bound part
    of the step."""
    import torch

    from lpm_graph.layers import RandomStreams

    def once() -> float:
        t0 = time.perf_counter()
        for k in range(draws):
            RandomStreams(k, device).uniform("sir", 0, (n,), torch.float32)
        synchronized(None)
        return time.perf_counter() - t0

    return statistics.median(once() for _ in range(5))


def measure(run, steps: int, repeats: int, warm_steps: int) -> tuple[float, object, dict]:
    """Warm ``run`` up with ``warm_steps`` steps (caches: CSR, contact scales), then time
    ``repeats`` runs of ``steps``: the warm-up time, the last trajectory, and the case with
    the peak RSS of the build + warm-up and of the timed runs."""
    warm, _ = timed(lambda: run(warm_steps))
    build_peak = peak_rss_gib(since_reset=True) * GIB
    reset_peak_rss()
    times, traj, cpu = [], None, cpu_sample()
    for _ in range(repeats):
        traj = None  # free the last run before the next
        t, traj = timed(lambda: run(steps))
        times.append(t)
    load = other_load(cpu)
    run_peak = peak_rss_gib(since_reset=True) * GIB
    measured = {
        "cases": {"a": {"time": statistics.median(times), "steps": steps, "other": load}},
        "rss": max(build_peak, run_peak),
        "rss_build": build_peak,
        "rss_run": run_peak,
    }
    return warm, traj, measured


def synchronized(result):
    """``result`` once the device has finished the work queued for it (a GPU runs the step
    loop asynchronously; the loop itself never waits)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return result


def device_name(device: str) -> str:
    import torch

    if torch.device(device).type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def reuse_option() -> bool:
    """Whether this lpm-graph's ``simulate`` takes ``reuse_memory=`` (an earlier version,
    measured for a before / after comparison, may not)."""
    import inspect

    from lpm_graph import simulate

    return "reuse_memory" in inspect.signature(simulate).parameters


def threads_of(args) -> int:
    return 1 if args.child == "sir1" else args.threads


def child_sir(args) -> dict:
    import torch

    from lpm_graph import simulate
    from lpm_graph.datasets import erdos_renyi
    from lpm_graph.protocols import SIR

    torch.set_num_threads(threads_of(args))
    n, days = args.n, args.days
    build, graph = timed(lambda: erdos_renyi(n, args.mean_degree, seed=0).to(args.device))
    sir = SIR(TAU, GAMMA, dt=1.0, order="infect_first").to(args.device)

    def run(steps, **options):
        with torch.no_grad():
            traj = simulate(sir, graph, steps=steps, initial_infected=SEEDS, seed=1, **options)
        return synchronized(traj)

    # the warm-up builds the CSR (step 1) and its transpose (step 2: the event-driven force of
    # infection pushes changes along out-edges)
    warm, traj, measured = measure(run, days, args.repeats, 2)
    attack = 1 - traj.counts["S"][-1].item() / n
    step_bytes, by_kernel, how = None, {}, "not counted (1-thread run)"
    draws = 0.0
    if args.child == "sir":
        # the kernels' traffic, counted without the reuse of blocks (whose out= calls the
        # counting would see as reads of the output); it moves the same bytes either way
        plain = {"reuse_memory": False} if reuse_option() else {}
        step_bytes, by_kernel, how = count_step_bytes(lambda k: run(k, **plain), days)
        drawn = by_kernel.get("rand", 0) + by_kernel.get("uniform_", 0)  # short, chunked draws
        draws = random_draw_time(n, round(drawn / (4 * n)), args.device)
    e = graph.num_edges()
    return {
        **measured,
        "build": build + warm,
        "edges": e,
        "attack": attack,
        "step_bytes": step_bytes,
        "step_bytes_how": how,
        "step_bytes_by_kernel": by_kernel,
        "draws": draws,
        "torch": torch.__version__,
        "device": device_name(args.device),
    }


def child_seirm(args, backward: bool) -> dict:
    import torch
    from seirm_step import population

    from lpm_graph import simulate
    from lpm_graph.protocols import SEIRM

    torch.set_num_threads(args.threads)
    n, days = args.n, args.seirm_steps
    build, graph = timed(lambda: population(n, 0).to(args.device))
    model = SEIRM(2.5, 0.02).to(args.device)
    checkpoint = args.checkpoint or None

    def forward(steps):
        with torch.no_grad():
            return synchronized(simulate(model, graph, steps, initial_infected=0.01, seed=0))

    def forward_backward(steps):
        model.zero_grad(set_to_none=True)
        traj = simulate(model, graph, steps, initial_infected=0.01, seed=0, checkpoint=checkpoint)
        (traj.flows["infections"].sum() + traj.counts["M"][-1]).backward()
        return synchronized(traj)

    fn = forward_backward if backward else forward
    # the warm-up builds the CSR (and its transpose) and the contact scales
    warm, traj, measured = measure(fn, days, args.repeats, min(days, 2))
    out = {
        **measured,
        "build": build + warm,
        "edges": graph.num_edges(),
        "infections": float(traj.flows["infections"].detach().sum()),
    }
    if backward:
        grad = model.reproduction_number.grad
        out["grad_R"] = None if grad is None else float(grad.sum())
        out["checkpoint"] = checkpoint
    return out


def child_starsim(args) -> dict:
    peer = Namespace(num_agents=args.n, mean_degree=args.mean_degree, steps=args.days)
    peer.repeats = args.repeats
    cpu = cpu_sample()
    out = run_starsim(peer)
    case = {"time": out["run"], "steps": out["steps"], "other": other_load(cpu)}
    return {**out, "cases": {"a": case}, "rss": out["rss"] * GIB}


def child_covasim(args) -> dict:
    import covasim as cv

    def make(n: int, days: int):
        kind = args.covasim_pop_type
        return cv.Sim(pop_size=n, pop_type=kind, n_days=days, rand_seed=1, verbose=0)

    warmup, _ = timed(lambda: make(10_000, 10).run())  # numba JIT / cache load
    inits, runs, cpu = [], [], cpu_sample()
    sim = None
    for _ in range(args.repeats):
        sim = make(args.n, args.days)
        inits.append(timed(sim.init)[0])
        runs.append(timed(sim.run)[0])
    load = other_load(cpu)
    layers = {k: 2 * len(net) / args.n for k, net in sim.networks.items()}
    case = {"time": statistics.median(runs), "steps": int(sim.t.npts), "other": load}
    return {
        "version": cv.__version__,
        "cases": {"a": case},
        "warmup": warmup,
        "init": statistics.median(inits),
        "contacts": layers,
        "attack": float(sim.results["cum_infections"][-1]) / args.n,
        "rss": peak_rss_gib(since_reset=True) * GIB,
    }


# ------------------------------------------------------------------------------ the driver
def mem_available() -> float:
    with open("/proc/meminfo") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("MemAvailable")) * 1024.0


def rss_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) * 1024.0
    except (OSError, StopIteration):
        return 0.0


# The children run with glibc's allocator as a user's process does. glibc serves an allocation
# above 32 MiB (a float32 tensor of 1e7 agents is 40 MB) with a fresh mmap and unmaps it when
# freed, so each such temporary would be faulted in and zeroed again; the simulator reuses
# those blocks itself (lpm_graph.ops.ReuseBuffers). --raise-heap-thresholds runs every child
# (ours and the peers) with these settings instead, which keep freed memory in the heap (they
# fragment it under autograd: SEIRM forward + backward at 1e7 doubled its peak).
HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**34)}


def launch(cmd: list[str], timeout: float, args, threads: int) -> dict:
    """Run one child (its own process group); stop it after ``timeout`` s or when the machine
    runs short of memory; its result is the last stdout line that is a JSON object."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    if args.raise_heap_thresholds:
        env = {**HEAP_ENV, **env}  # settings the caller made win
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    seen, stopped = 0.0, None
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            seen = max(seen, rss_of(proc.pid))
            if time.perf_counter() - t0 > timeout:
                stopped = f"not finished in {timeout:.0f} s"
            elif mem_available() < args.memory_floor * GIB:
                stopped = (
                    f"stopped: the machine's available memory fell below {args.memory_floor:g} "
                    f"GiB (this child's RSS {seen / GIB:.1f} GiB)"
                )
            if stopped:
                os.killpg(proc.pid, signal.SIGKILL)  # the group of the child started above
                stdout, stderr = proc.communicate()
                break
    wall = time.perf_counter() - t0
    if stopped:
        return {"error": stopped, "wall": wall}
    if proc.returncode != 0:
        lines = [x for x in (stderr or stdout).strip().splitlines() if x.strip()]
        last = next((x for x in reversed(lines) if not x.startswith(" ")), "no output")
        if proc.returncode == -signal.SIGKILL:
            last = f"killed by SIGKILL, most likely out of memory (RSS seen {seen / GIB:.1f} GiB)"
        elif "MemoryError" in (stderr or ""):
            last = f"out of memory: {last}"
        return {"error": f"failed (exit {proc.returncode}): {last}", "wall": wall}
    lines = [x for x in stdout.splitlines() if x.startswith("{")]
    if not lines:
        return {"error": "no result printed", "wall": wall}
    return {**json.loads(lines[-1]), "wall": wall}


def wait_quiet(args) -> float | None:
    """Wait (up to --wait-quiet s) until other processes keep at most --quiet-load cores busy,
    sampled over 2 s; returns the last sample."""
    deadline = time.perf_counter() + args.wait_quiet
    while True:
        start = cpu_sample()
        time.sleep(2)
        load = other_load(start)
        if load is None or load <= args.quiet_load or time.perf_counter() >= deadline:
            return load
        print(f"  waiting: other processes keep {load:.1f} cores busy", flush=True)
        time.sleep(8)


def child_command(args, kind: str, n: int, repeats: int) -> list[str]:
    if kind == "agenttorch":
        cmd = [sys.executable, str(HERE / "agenttorch_covid.py"), "--child", "agenttorch"]
        cmd += ["--num-agents", str(n), "--steps", str(args.seirm_steps), "--synthetic"]
        return cmd + ["--repeats", str(repeats), "--threads", str(args.threads)]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--n", str(n)]
    for name in ("days", "seirm_steps", "mean_degree", "threads", "checkpoint", "bandwidth_mib"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--device", args.device]
    return cmd + ["--repeats", str(repeats), "--covasim-pop-type", args.covasim_pop_type]


def peak_of(kind: str, result: dict) -> float | None:
    """The whole-child peak RSS in bytes (AgentTorch: its largest case)."""
    if kind == "agenttorch":
        return result.get("rss_total", 0) * GIB or None
    return result.get("rss")


def estimate(points: list[tuple[int, float]], kind: str, n: int) -> tuple[float, str]:
    """Peak RSS at ``n`` from the measured (agents, bytes) of this run."""
    pts = sorted(points)
    if len(pts) >= 2:
        (n1, b1), (n2, b2) = pts[-2:]
        slope = (b2 - b1) / (n2 - n1)
        if slope > 0:
            return b2 + slope * (n - n2), f"line through {n1:,} and {n2:,}"
    if pts:  # proportional above the interpreter's baseline; from a small size (whose peak is
        # mostly fixed costs) at least the fallback. From 1e6 the proportional estimate holds:
        # SEIRM forward + backward, 1.76 GiB at 1e6, took 10.15 GiB at 1e7 (the fallback said
        # 20.5 GiB and skipped it)
        n1, b1 = pts[-1]
        base = min(BASELINE, 0.8 * b1)
        scaled = base + (b1 - base) * n / n1
        if n1 < 10**6:
            scaled = max(scaled, FALLBACK_BYTES_PER_AGENT[kind] * n)
            return scaled, f"proportional to {n1:,} above {BASELINE / GIB} GiB, or the fallback"
        return scaled, f"proportional to {n1:,} above {BASELINE / GIB} GiB"
    fallback = BASELINE + FALLBACK_BYTES_PER_AGENT[kind] * n
    return fallback, "fallback bytes per agent (measured at 1e6)"


def measure_bandwidth(args) -> dict:
    wait_quiet(args)
    print(f"copy bandwidth ({args.bandwidth_mib} MiB float32, {args.threads} threads) ...")
    bw = launch(child_command(args, "bandwidth", 0, 1), args.timeout, args, args.threads)
    if "error" not in bw:
        print(f"  {bw['bandwidth'] / 1e9:.1f} GB/s (read + written)", flush=True)
    return bw


def collect(args) -> dict:
    results: dict = {"sizes": {}, "args": {k: str(v) for k, v in vars(args).items()}}
    first = measure_bandwidth(args)
    measured: dict[str, list[tuple[int, float]]] = {k: [] for k in KINDS}
    skip = set(args.skip)
    for n in args.sizes:
        repeats = args.repeats or (3 if n <= 100_000 else 1)
        row = results["sizes"][str(n)] = {"repeats": repeats}
        for kind in KINDS:
            if kind in skip:
                continue
            need, how = estimate(measured[kind], kind, n)
            free = mem_available() - args.memory_margin * GIB
            print(f"N = {n:,}: {kind} (estimated peak {need / GIB:.1f} GiB) ...", flush=True)
            if need > free:
                row[kind] = {
                    "error": f"skipped: estimated peak {need / GIB:.1f} GiB ({how}) exceeds the "
                    f"{free / GIB:.1f} GiB available (MemAvailable - {args.memory_margin:g} GiB)",
                    "estimate": need,
                }
                print(f"  {row[kind]['error']}", flush=True)
                continue
            before = wait_quiet(args)
            limit = args.peer_timeout if kind in PEERS else args.timeout
            threads = 1 if kind == "sir1" else args.threads
            result = launch(child_command(args, kind, n, repeats), limit, args, threads)
            result.update(estimate=need, load_before=before)
            row[kind] = result
            if "error" in result:
                print(f"  {result['error']}", flush=True)
                continue
            peak = peak_of(kind, result)
            if peak:
                measured[kind].append((n, peak))
            times = ", ".join(f"{c['time']:.2f} s" for c in result["cases"].values())
            print(f"  {times}; peak {peak / GIB:.2f} GiB; child wall {result['wall']:.0f} s")
    runs = [x for x in (first, measure_bandwidth(args)) if "error" not in x]
    results["bandwidth"] = {"runs": runs, "error": first.get("error", "not measured")}
    if runs:
        best = max(runs, key=lambda x: x["bandwidth"])
        results["bandwidth"] = {"runs": runs, "bandwidth": best["bandwidth"]}
    results["estimates"] = {
        str(n): {k: estimate(measured[k], k, n) for k in KINDS if k not in skip}
        for n in args.estimate
    }
    return results


# ------------------------------------------------------------------------------ report
def rows(results: dict):
    """(N, label, result, case) for every case measured; (N, label, result, None) for a failure."""
    for key, row in results["sizes"].items():
        n = int(key)
        for kind in KINDS:
            if kind not in row:
                continue
            result = row[kind]
            if "error" in result:
                names = ["a", "b"] if kind == "agenttorch" else ["a"]
                for name in names:
                    yield n, LABELS[kind, name], result, None
                continue
            for name, case in result["cases"].items():
                yield n, LABELS[kind, name], result, case


def steps_of(case: dict, results: dict) -> int:
    """Steps run in a case (AgentTorch's cases ran --seirm-steps)."""
    return case.get("steps", int(results["args"]["seirm_steps"]))


def rates(results: dict) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for n, label, _, case in rows(results):
        if case is not None:
            out.setdefault(label, {})[n] = n * steps_of(case, results) / case["time"]
    return out


def fmt_bytes(x: float | None) -> str:
    return "" if not x else f"{x / GIB:.2f}"


def roofline(results: dict) -> list[dict]:
    bw = results.get("bandwidth", {})
    out = []
    for key, row in results["sizes"].items():
        sir = row.get("sir", {})
        if "error" in sir or "cases" not in sir or "error" in bw or not sir["step_bytes"]:
            continue  # not run, or its bytes not counted (the step_bytes_how says why)
        n, case = int(key), sir["cases"]["a"]
        step = case["time"] / case["steps"]
        moved = sir["step_bytes"]
        out.append({
            "n": n, "edges": sir["edges"], "bytes": moved, "by_kernel": sir["step_bytes_by_kernel"],
            "how": sir["step_bytes_how"], "step": step,
            "ideal": moved / bw["bandwidth"], "fraction": moved / bw["bandwidth"] / step,
            "draws": sir.get("draws", 0.0),
            "fraction_no_draws": moved / bw["bandwidth"] / (step - sir.get("draws", 0.0)),
        })  # fmt: skip
    return out


def report(results: dict, args) -> str:
    bw = results.get("bandwidth", {})
    lines = [
        "# Scale: lpm-graph against Starsim, Covasim and AgentTorch",
        "",
        f"`{' '.join(['python', 'benchmarks/scale.py', *sys.argv[1:]])}`; torch threads "
        f"{args.threads} for lpm-graph and AgentTorch, Starsim and Covasim single-threaded "
        f"(numba); SIR and Covasim {args.days} days, SEIRM and AgentTorch {args.seirm_steps} "
        f"steps; median of the repeats (3 at N <= 1e5, else 1 unless --repeats).",
        "",
        "| agents | simulator | steps | time (s) | agent-steps/s | peak RSS (GiB) "
        "| bytes per agent | other load | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n, label, result, case in rows(results):
        if case is None:
            lines.append(f"| {n:,} | {label} | | | | | | | {result['error']} |")
            continue
        steps = steps_of(case, results)
        kind = next(k for (k, _), v in LABELS.items() if v == label)
        peak = case.get("rss", 0) * GIB if kind == "agenttorch" else result.get("rss")
        per_agent = f"{peak / n:,.0f}" if peak else ""
        load = "" if case.get("other") is None else f"{case['other']:.2f}"
        note = notes_for(kind, result)
        lines.append(
            f"| {n:,} | {label} | {steps} | {case['time']:.2f} | {n * steps / case['time']:.3g} "
            f"| {fmt_bytes(peak)} | {per_agent} | {load} | {note} |"
        )
    lines += ["", "## Roofline of the SIR step", ""]
    if "error" in bw:
        lines.append(f"Copy bandwidth not measured: {bw['error']}")
    else:
        each = ", ".join(f"{x['bandwidth'] / 1e9:.1f}" for x in bw["runs"])
        lines.append(
            f"Copy bandwidth: {bw['bandwidth'] / 1e9:.1f} GB/s, read + written (the higher of "
            f"{each} GB/s, before the first size and after the last: each the median of 10 "
            f"copies of {args.bandwidth_mib} MiB float32 with {args.threads} threads)."
        )
        lines += [
            "",
            "| agents | directed edges | bytes per step | per agent | roofline step (ms) "
            "| measured step (ms) | fraction of the roofline | of the step: random draws "
            "(ms) | fraction without the draws |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        table = roofline(results)
        for r in table:
            lines.append(
                f"| {r['n']:,} | {r['edges']:,} | {r['bytes'] / 1e6:.1f} MB | "
                f"{r['bytes'] / r['n']:.0f} B | {r['ideal'] * 1e3:.2f} | "
                f"{r['step'] * 1e3:.2f} | **{r['fraction']:.0%}** | {r['draws'] * 1e3:.2f} | "
                f"{r['fraction_no_draws']:.0%} |"
            )
        if table and table[-1]["by_kernel"]:
            r = table[-1]
            kernels = ", ".join(
                f"{k} {v / r['n']:.0f}" for k, v in r["by_kernel"].items() if v >= r["n"] / 2
            )
            lines += [
                "",
                f"Bytes per step ({r['how']}) by ATen kernel at {r['n']:,} agents, per agent "
                f"(mean degree {r['edges'] / r['n']:.1f}): {kernels}. The module docstring "
                "gives the model; measured step = forward time / days. Random draws: the step's "
                "draws from the library's streams timed alone (torch's CPU generator is "
                "serial: the streams fill chunks of 2^17 numbers on the torch threads, so "
                "this part does not scale with memory bandwidth).",
            ]
    lines += ["", "## Ratios the acceptance names", "", *ratio_lines(results)]
    if results.get("estimates"):
        lines += ["", "## Estimated peak memory (not run here)", ""]
        lines += ["| agents | " + " | ".join(k for k in KINDS if k not in args.skip) + " |"]
        lines += ["|---:|" + "---:|" * (len(KINDS) - len(args.skip))]
        for key, est in results["estimates"].items():
            cells = [f"{v[0] / GIB:.1f} GiB" for v in est.values()]
            lines.append(f"| {int(key):,} | " + " | ".join(cells) + " |")
        how = {v[1] for est in results["estimates"].values() for v in est.values()}
        lines += ["", f"From: {'; '.join(sorted(how))}."]
    lines += ["", "## Notes", "", *general_notes(results, args)]
    return "\n".join(lines) + "\n"


def notes_for(kind: str, result: dict) -> str:
    peaks = ""
    if "rss_build" in result:
        peaks = (
            f"; peak {fmt_bytes(result['rss_build'])} GiB in graph build + warm-up, "
            f"{fmt_bytes(result['rss_run'])} GiB in the runs"
        )
    if kind in ("sir", "sir1"):
        return f"attack rate {result['attack']:.3f}; graph + CSR {result['build']:.1f} s{peaks}"
    if kind == "starsim":
        return (
            f"Starsim {result['version']}; attack rate {result['attack']:.3f}; mean degree "
            f"{result['degree']:.2f}; init {result['init']:.1f} s"
        )
    if kind in ("seirm_fwd", "seirm_fb"):
        extra = f"; checkpoint={result['checkpoint']}" if kind == "seirm_fb" else ""
        degree = result["edges"] / result["n"]
        return f"{result['infections']:.0f} infections; mean degree {degree:.1f}{extra}{peaks}"
    if kind == "agenttorch":
        return f"AgentTorch {result['version']}; {result['directed_edges']:,} directed edges"
    if kind == "covasim":
        contacts = sum(result["contacts"].values())
        return (
            f"Covasim {result['version']}; {contacts:.1f} contacts per agent; cumulative "
            f"infections / N {result['attack']:.3f}; init {result['init']:.1f} s"
        )
    return ""


def loads(results: dict) -> dict[str, dict[int, float | None]]:
    out: dict[str, dict[int, float | None]] = {}
    for n, label, _, case in rows(results):
        if case is not None:
            out.setdefault(label, {})[n] = case.get("other")
    return out


def trust(*values: float | None) -> str:
    """A warning when other processes kept more than 0.2 cores busy during either case."""
    busy = [v for v in values if v is not None]
    if busy and max(busy) > 0.2:
        return f"; other load up to {max(busy):.2f}: not trustworthy, re-run on a quiet machine"
    return ""


def ratio_lines(results: dict) -> list[str]:
    r, load = rates(results), loads(results)
    out = []
    ss = LABELS["starsim", "a"]
    for kind, what in (("sir", ""), ("sir1", ", both single-threaded")):
        ours = LABELS[kind, "a"]
        for n in sorted(set(r.get(ours, {})) & set(r.get(ss, {}))):
            ratio = r[ours][n] / r[ss][n]
            verdict = ""
            if n == 1_000_000 and kind == "sir":
                mark = MARKS["sir_vs_starsim"]
                verdict = f" ({'PASS' if ratio >= mark else 'FAIL'}: at least {mark:g}x at 1e6)"
            note = trust(load[ours][n], load[ss][n])
            out.append(f"- {ours} / Starsim SIR agent-steps/s at {n:,}{what}: "
                       f"**{ratio:.2f}x**{verdict}{note}")  # fmt: skip
    if 1_000_000 not in set(r.get(LABELS["sir", "a"], {})) & set(r.get(ss, {})):
        out.append("- SIR forward at 1e6: not measured in this run (both lpm-graph and Starsim "
                   "needed)")  # fmt: skip
    fb, at = LABELS["seirm_fb", "a"], LABELS["agenttorch", "b"]
    both = sorted(set(r.get(fb, {})) & set(r.get(at, {})))
    for n in both:
        ratio = r[fb][n] / r[at][n]
        verdict = ""
        if n == both[-1]:
            mark = MARKS["seirm_fb_vs_agenttorch"]
            verdict = (
                f" ({'PASS' if ratio >= mark else 'FAIL'}: at least {mark:g}x at AgentTorch's "
                f"largest size run here)"
            )
        note = trust(load[fb][n], load[at][n])
        out.append(f"- SEIRM forward + backward, lpm-graph / AgentTorch COVID agent-steps/s at "
                   f"{n:,}: **{ratio:.1f}x**{verdict}{note}")  # fmt: skip
    if not both:
        out.append("- SEIRM forward + backward against AgentTorch: no size where both ran")
    for line in roofline(results):
        mark = MARKS["sir_roofline"]
        verdict = "PASS" if line["fraction"] >= mark else "FAIL"
        note = trust(load[LABELS["sir", "a"]][line["n"]])
        out.append(f"- SIR step at {line['n']:,}: **{line['fraction']:.0%}** of the roofline "
                   f"({verdict}: at least {mark:.0%}){note}")  # fmt: skip
    return out


def general_notes(results: dict, args) -> list[str]:
    ran = {kind for row in results["sizes"].values() for kind in row if kind in KINDS}
    devices = {
        r.get("device")
        for row in results["sizes"].values()
        for r in row.values()
        if isinstance(r, dict)
    }
    out = [
        f"- lpm-graph ran on {', '.join(sorted(d for d in devices if d)) or args.device}; the "
        "peers on the CPU.",
        "- agent-steps/s = agents x steps run / median wall time. Starsim and Covasim run days "
        "+ 1 steps (days 0..days) and are counted so.",
        "- peak RSS: VmHWM of the child process (imports, population or network, the runs); "
        "AgentTorch: VmHWM of its case from the case's start (it keeps a copy of its state after "
        "every substep, so its memory grows with the steps).",
        "- other load: mean cores kept busy by other processes during the timed runs "
        f"(/proc/stat; {os.cpu_count()} cores here); above ~0.2 a time is not trustworthy (with "
        "one core taken, two torch threads wait on each other: up to 5x slower).",
        "- allocator: "
        + (
            "every child (ours and the peers) with "
            + " ".join(f"{k}={v}" for k, v in HEAP_ENV.items())
            + " (--raise-heap-thresholds): freed memory stays in the heap for reuse."
            if args.raise_heap_thresholds
            else "glibc's defaults, as in a user's process (lpm-graph reuses its large "
            "temporaries itself: lpm_graph.ops.ReuseBuffers)."
        ),
    ]
    if "sir1" in ran:
        out.append(
            "- lpm-graph SIR forward, 1 thread: the same run with one torch thread, to compare "
            "with single-threaded Starsim core for core."
        )
    if "starsim" in ran:
        out.append(
            "- Starsim: the same SIR as ours on RandomNet with the same N, mean degree and days "
            "(see benchmarks/sir_scale.py); not timed: JIT warm-up and sim.init()."
        )
    if "covasim" in ran:
        layers = "; ".join(
            f"{int(k):,}: " + ", ".join(f"{a} {b:.1f}" for a, b in v["covasim"]["contacts"].items())
            for k, v in results["sizes"].items()
            if "contacts" in v.get("covasim", {})
        )
        out.append(
            f"- Covasim: pop_type={args.covasim_pop_type!r}, its default COVID model (not our "
            "model: a reference for the speed of a full COVID ABM); not timed: JIT warm-up and "
            f"sim.init() (population and network). Contacts per agent by layer: {layers}."
        )
    if "agenttorch" in ran:
        out.append(
            f"- AgentTorch {AT_VERSION} COVID model via benchmarks/agenttorch_covid.py --child "
            "agenttorch (the synthetic population of seirm_step.py, as our SEIRM); what it took "
            "to run is in that script's docstring and in benchmarks/README.md. Not the same "
            "model as ours (E 5 days, R2 summed over weeks, no deaths): speed only."
        )
    if "seirm_fb" in ran:
        how = (
            f"checkpoint={args.checkpoint} (each block of {args.checkpoint} steps recomputed "
            "in backward)"
            if args.checkpoint
            else "no checkpointing (see the module docstring)"
        )
        out.append(f"- SEIRM forward + backward: straight-through, {how}.")
    return out


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for label, points in rates(results).items():
        xs = sorted(points)
        colour, marker, style = STYLE.get(label, ("k", "o", "-"))
        ax.plot(xs, [points[x] for x in xs], marker=marker, ls=style, color=colour, label=label)
    lines = roofline(results)
    if lines:
        xs = [r["n"] for r in lines]
        ax.plot(xs, [r["n"] / r["ideal"] for r in lines], ls="-.", color="0.4", marker="",
                label="SIR step at the copy bandwidth (roofline)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents")
    ax.set_ylabel("agent-steps per second")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def size_arg(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a number of agents: {text!r}")
    return int(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=size_arg, nargs="+", default=[10**5, 10**6, 10**7])
    p.add_argument("--repeats", type=int, default=0, help="default 3 at N <= 1e5, else 1")
    p.add_argument("--days", type=int, default=100, help="SIR, Starsim and Covasim days")
    p.add_argument("--seirm-steps", type=int, default=10, help="SEIRM and AgentTorch steps")
    p.add_argument("--mean-degree", type=float, default=10)
    p.add_argument("--checkpoint", type=int, default=0, help="SEIRM backward; 0: off")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--peer-timeout", type=float, default=900)
    p.add_argument("--timeout", type=float, default=3600, help="for lpm-graph's children")
    p.add_argument("--covasim-pop-type", default="random", choices=["random", "hybrid"])
    p.add_argument("--skip", nargs="*", default=[], choices=KINDS)
    p.add_argument("--bandwidth-mib", type=int, default=512)
    p.add_argument("--wait-quiet", type=float, default=300,
                   help="s to wait before each child for the machine to be quiet")  # fmt: skip
    p.add_argument("--quiet-load", type=float, default=0.3, help="cores busy elsewhere")
    p.add_argument("--memory-margin", type=float, default=2.0, help="GiB left free")
    p.add_argument("--memory-floor", type=float, default=1.0, help="GiB; stop a child below")
    p.add_argument("--estimate", type=size_arg, nargs="*", default=None,
                   help="sizes to estimate memory for (default: 1e7 when not run)")  # fmt: skip
    p.add_argument("--device", default="cpu",
                   help="where lpm-graph's graphs and runs live, e.g. cuda (the peers run on "
                   "the CPU)")  # fmt: skip
    p.add_argument("--raise-heap-thresholds", action="store_true",
                   help="run the children with raised glibc mmap / trim thresholds")  # fmt: skip
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/scale.md"))
    p.add_argument("--child", choices=["bandwidth", *KINDS], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fn = {
            "bandwidth": child_bandwidth,
            "sir": child_sir,
            "sir1": child_sir,
            "seirm_fwd": lambda a: child_seirm(a, backward=False),
            "seirm_fb": lambda a: child_seirm(a, backward=True),
            "starsim": child_starsim,
            "covasim": child_covasim,
        }[args.child]
        print(json.dumps({**fn(args), "n": args.n}))
        return
    if args.estimate is None:
        args.estimate = [n for n in (10**7,) if n not in args.sizes]
    results = collect(args)
    text = report(results, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
    figure = args.output.with_suffix(".png")
    plot(results, figure, f"agent-steps/s, {args.threads} torch threads, this machine")
    print(f"\n{text}\nwritten to {args.output}, {figure} and {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
