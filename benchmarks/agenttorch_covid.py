"""AgentTorch 0.6.0's COVID model against lpm-graph's SEIRM: agent-steps per second.

Run ``python benchmarks/agenttorch_covid.py`` (Franklin County, MA: 70,916 agents and their
GradABM contact network, 21 daily steps, 3 repeats; about 30 s on 2 cores) or
``--num-agents 1000000 --steps 10`` (a synthetic population; about 6 minutes, and AgentTorch
peaks at ~12 GiB: its memory grows by ~0.9 GiB per step at this size, so 21 steps would need
~22 GiB). Prints a Markdown table and writes it to ``--output``. ``--skip-agenttorch`` runs
ours only. The machine should be otherwise idle: the table's "other load" column says how many
cores other processes kept busy during each case.

Populations. ``--num-agents 70916`` (default) reads ``25011_AgentsData.csv`` (age groups) and
``25011_random_network.csv`` (249,991 undirected contacts) as bundled with lpm-graph (gzipped,
byte-identical to GradABM's files), or the uncompressed files in ``--data-dir`` if given; any
other size (or ``--synthetic``) builds the population of
``seirm_step.py``'s ``population()``: every agent picks ``U{5..10}`` random partners, contacts
undirected (degree 10 to 20 plus the contacts others picked, mean 15), age groups 0..7 with the
Franklin shares. Both systems get the same agents, ages and contacts, and 1% of the agents
start infected (AgentTorch: a fixed random 1% in its stage I; ours: ``initial_infected=0.01``),
since the data's own ``stage`` column seeds a single exposed agent.

Measured, each in its own child process (so that each has its own peak memory), ``--steps``
daily steps from the initial state, median over ``--repeats`` after one untimed warm-up run
(2 steps for AgentTorch):

* AgentTorch: ``runner.step(steps)`` of its COVID model (``agent_torch.models.covid``:
  substep 0 ``NewTransmission``, a PyG ``MessagePassing`` over every directed contact with a
  straight-through Bernoulli per agent; substep 1 ``SEIRMProgression``), (a) under ``no_grad``,
  (b) followed by ``backward()`` of daily infections + daily deaths (its environment variables
  ``daily_infected``, ``daily_deaths``) to its learnable parameters ``R2`` (the weekly R) and
  ``M`` (mortality). ``runner.init()`` before every run (reads the files, builds the state) is
  not timed and is reported apart. As shipped, ``Controller.progress`` copies the state at
  every substep, the edge tuple included (``deepcopy``: 24 bytes per directed edge), and the
  runner keeps every substep's state (``state_trajectory``), so its memory grows with the steps;
  that is part of its time and memory.
* lpm-graph: ``simulate(SEIRM(2.5, 0.02), graph, steps, initial_infected=0.01, seed=0)``,
  (a) under ``no_grad``, (b) then ``backward()`` of new infections + final deaths
  (straight-through).

agent-steps/s = ``N * steps / time``; peak RSS is VmHWM from the case's start (it includes the
state built by ``init`` and, for AgentTorch, its trajectory). The models are not the same
(AgentTorch: E 5 days, I 5 days, R2 = 4.75, deaths counted as ``M`` times recoveries, no agent
dies; ours: E 3, I 5 days, R = 2.5, agents die with probability 0.02): only speed is compared.

What AgentTorch 0.6.0 needed here (torch 2.13 CPU, Python 3.11, pandas 3, numpy 2). The
install: ``pip install --no-deps agent-torch==0.6.0`` then ``pip install omegaconf epiweeks``.
Its declared dependencies would bring ~50 packages for its LLM features (langchain,
langchain-openai, dspy, litellm, openai, dask, ...; not torch; ``asyncio`` 4.0.0 on PyPI is an
empty placeholder); ``epiweeks``, which its COVID model imports, is not declared. Nothing else
was needed for torch 2.13, PyG 2.8, pandas 3.1 and numpy 2.4. Everything else is done by this
script at run time; site-packages is not edited:

1. ``agent_torch.core.llm.backend`` imports ``langchain_openai`` and ``dspy`` and the COVID
   policy imports it (``ModuleNotFoundError: No module named 'langchain_openai'``) without using
   it in heuristic mode: a stub module is put in ``sys.modules`` when langchain is missing.
2. The shipped ``models/covid/yamls/config.yaml`` points at the authors' machine
   (``population_dir: /u/ayushc/...``) and runs in ``EXECUTION_MODE: llm``, where the policy
   asserts an LLM behaviour, ``Controller.act`` swallows the ``AssertionError`` and the
   transmission fails with ``TypeError: 'NoneType' object is not subscriptable``. We write a
   copy of that config to a temporary folder with ``population_dir`` there,
   ``num_agents`` = N, ``EXECUTION_MODE: heuristic``, ``num_steps_per_episode`` =
   max(steps, 21) (it sizes the infectiousness table, which needs at least 11 entries) and
   ``NUM_WEEKS`` = ceil(that / 7) (one R per week), next to the population files in the layout
   it reads (``age.pickle``: a pandas Series; ``disease_stages.csv``; ``mobility_networks/0.csv``:
   one undirected contact per line).
3. ``network_from_file`` builds a networkx graph and then ``nx.adjacency_matrix(G).todense()``,
   a dense N x N int64 matrix it never uses: ``numpy._core._exceptions._ArrayMemoryError: Unable
   to allocate 37.5 GiB for an array with shape (70916, 70916) and data type int64``. We register
   a replacement that returns the same ``(edge_index, edge_attr)`` (each contact both ways, type
   1, weight 1) and no graph: the networkx graph is never read by the model, but every substep
   ``Controller.progress`` deep-copies the state and with it that graph, ~3 s per substep on
   Franklin (1.2e4 agent-steps/s instead of ~1e6; ``--keep-nx-graph`` keeps it, to measure).
4. The heuristic policy returns ``torch.rand(N, 1)`` as the isolation decision, and the
   transmission multiplies new exposures by ``1 - will_isolate``: disease stages become
   fractions, and those agents are neither susceptible nor exposed, so they never progress
   and the epidemic stops after the seeds recover. We patch ``MakeIsolationDecision.forward``
   to return zeros (nobody isolates), which keeps the stages integer (the classic GradABM SEIRM).

Not patched, but noted (they change the epidemic, not the work per step):
``R = (R2 * week_one_hot).sum()`` broadcasts ``R2`` (``[weeks, 1]``) against the one-hot
(``[1, weeks]``), so every step uses the sum of the weekly values (3 x 4.75) and all weeks get
the same gradient; ``_lam`` divides by ``torch.gather(x_i[:, 4], 0, edge_type)``, i.e. by the
mean-interaction count of the target of edge 1 for every edge (a constant), not of each edge's
target. ``trainer.py`` imports ``AgentTorch.helpers``, which does not exist, and ``main.py``
imports ``simulator`` as a top-level module (it only runs from inside the model's folder).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sir_scale import peak_rss_gib, reset_peak_rss, timed  # noqa: E402

FRANKLIN = 70_916
ROOT = Path(__file__).resolve().parent.parent
BUNDLED = "datasets/data/gradabm_ma"  # the GradABM files inside the lpm_graph package
AT_VERSION = "0.6.0"


def cpu_sample() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, of this process, wall clock); None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(v) - v[3] - v[4]  # all but idle and iowait
    return busy / tick, (int(own[11]) + int(own[12])) / tick, time.perf_counter()


def other_load(start) -> float | None:
    """Mean number of cores kept busy by other processes since ``start`` (a cpu_sample())."""
    end = cpu_sample()
    if start is None or end is None:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / (end[2] - start[2]))


# ---------------------------------------------------------------- population (both systems)
def load_population(args):
    """(pairs [2, P] int64, one undirected contact per column; age [N] int64; source)."""
    n = args.num_agents
    if n == FRANKLIN and not args.synthetic:
        from importlib import resources

        from lpm_graph.graph import read_edge_list, read_node_table

        if args.data_dir is None:
            folder, suffix, where = resources.files("lpm_graph") / BUNDLED, ".csv.gz", "bundled"
        else:
            folder, suffix, where = args.data_dir, ".csv", str(args.data_dir)
        with (
            resources.as_file(folder / f"25011_AgentsData{suffix}") as agents,
            resources.as_file(folder / f"25011_random_network{suffix}") as network,
        ):
            # checks that the agents are 0..n-1, each once; one column per line of the network
            columns = {"age_group": "int64"}
            table = read_node_table(agents, id_column="", columns=columns, num_nodes=n)
            pairs = read_edge_list(network, num_nodes=n).edge_index()
        return pairs.contiguous(), table["age_group"], f"Franklin County, MA ({where})"
    from seirm_step import population

    graph = population(n, 0)
    ei = graph.edge_index()  # both directions of every contact, no self-loops
    pairs = ei[:, ei[0] < ei[1]].contiguous()
    return pairs, graph.node_attrs("agent")["age_group"], "synthetic, seirm_step.population()"


def initial_infected(n: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randperm(n, generator=gen)[: max(1, round(0.01 * n))]


# ---------------------------------------------------------------- AgentTorch
def patch_agenttorch_imports() -> list[str]:
    """Workaround 1: stub the LLM backend when langchain / dspy (LLM mode only) are absent."""
    import importlib.util
    import types

    notes = []
    if any(importlib.util.find_spec(m) is None for m in ("langchain_openai", "langchain", "dspy")):
        stub = types.ModuleType("agent_torch.core.llm.backend")
        stub.LangchainLLM = stub.DspyLLM = None
        sys.modules["agent_torch.core.llm.backend"] = stub
        notes.append("stubbed agent_torch.core.llm.backend (langchain/dspy not installed)")
    return notes


def write_agenttorch_inputs(folder: Path, pairs, age, steps: int) -> Path:
    """Workaround 2: the population files and a copy of the shipped config pointing at them."""
    import agent_torch
    import numpy as np
    import pandas as pd
    from omegaconf import OmegaConf

    n = age.numel()
    (folder / "mobility_networks").mkdir(parents=True)
    pd.Series(age.numpy()).to_pickle(folder / "age.pickle")
    stages = np.zeros(n, dtype=np.int64)
    stages[initial_infected(n).numpy()] = 2  # INFECTED_VAR
    pd.DataFrame({"stages": stages}).to_csv(folder / "disease_stages.csv", index=False)
    np.savetxt(folder / "mobility_networks/0.csv", pairs.t().numpy(), fmt="%d", delimiter=",")
    shipped = Path(agent_torch.__file__).parent / "models/covid/yamls/config.yaml"
    conf = OmegaConf.load(shipped)
    meta = conf.simulation_metadata
    meta.population_dir = str(folder)
    meta.num_agents = n
    meta.EXECUTION_MODE = "heuristic"
    meta.device = "cpu"
    meta.calibration = True
    meta.num_steps_per_episode = max(steps, 21)
    meta.NUM_WEEKS = math.ceil(meta.num_steps_per_episode / 7)
    path = folder / "config.yaml"
    OmegaConf.save(conf, path)
    return path


def agenttorch_registry(keep_nx_graph: bool):
    """Workarounds 3 and 4: a network loader without the dense matrix; no isolation."""
    import pandas as pd
    import torch
    from agent_torch.models.covid.simulator import get_registry
    from agent_torch.models.covid.substeps.new_transmission import action

    def network_from_file(params):  # the shipped one, less nx.adjacency_matrix(G).todense()
        forward = torch.tensor(pd.read_csv(params["file_path"], header=None).to_numpy())
        forward = forward.t().long()
        edges = torch.hstack((forward, torch.vstack((forward[1], forward[0]))))
        kind = torch.ones(edges.shape[1]).long()
        weight = torch.ones(edges.shape[1]).float()
        attr = torch.vstack((kind, weight))
        graph = None
        if keep_nx_graph:
            from torch_geometric.data import Data
            from torch_geometric.utils.convert import to_networkx

            graph = to_networkx(Data(edge_index=edges, edge_attr=attr))
        return graph, (edges, attr)

    def no_isolation(self, state, observation):
        return {self.output_variables[0]: torch.zeros(self.num_agents, 1, device=self.device)}

    action.MakeIsolationDecision.forward = no_isolation
    registry = get_registry()
    registry.register(network_from_file, "network_from_file", key="network")
    return registry


def run_agenttorch(args) -> dict:
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    notes = patch_agenttorch_imports()
    from importlib.metadata import version

    from agent_torch.core.helpers import read_config
    from agent_torch.models.covid.simulator import get_runner

    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
    steps = args.steps
    t0 = time.perf_counter()
    pairs, age, source = load_population(args)
    out = {"version": version("agent-torch"), "notes": notes, "source": source}
    out["directed_edges"] = 2 * pairs.shape[1]
    with tempfile.TemporaryDirectory(prefix="agenttorch_covid_") as tmp:
        config_path = write_agenttorch_inputs(Path(tmp), pairs, age, steps)
        out["build"] = time.perf_counter() - t0
        del pairs, age
        config = read_config(str(config_path))
        runner = get_runner(config, agenttorch_registry(args.keep_nx_graph))
        inits = []

        def fresh():
            runner.state = runner.state_trajectory = None
            gc.collect()
            t, _ = timed(runner.init)
            inits.append(t)

        def transmission():
            return runner.initializer.transition_function["0"]["new_transmission"]

        def forward(k=steps):
            with torch.no_grad():
                runner.step(k)

        def forward_backward(k=steps):
            runner.step(k)
            env = runner.state["environment"]
            (env["daily_infected"].sum() + env["daily_deaths"].sum()).backward()

        cases = {"a": forward, "b": forward_backward}
        out["cases"] = {}
        for key, fn in cases.items():
            fresh()
            fn(min(steps, 2))  # warm-up
            times = []
            fresh()
            reset_peak_rss()
            cpu = cpu_sample()
            for i in range(args.repeats):
                if i:
                    fresh()
                t, _ = timed(fn)
                times.append(t)
            rss = peak_rss_gib(since_reset=True)
            env = runner.state["environment"]
            stage = runner.state["agents"]["citizens"]["disease_stage"]
            info = {
                "infections": float(env["daily_infected"].sum()),
                "deaths": float(env["daily_deaths"].sum()),
                "integer_stages": bool((stage == stage.round()).all()),
            }
            grad = transmission().calibrate_R2.grad
            if key == "b":
                info["dR2"] = None if grad is None else grad.view(-1).tolist()
            out["cases"][key] = {"time": statistics.median(times), "rss": rss, **info}
            out["cases"][key]["other"] = other_load(cpu)
        out["init"] = statistics.median(inits)
        out["rss_total"] = peak_rss_gib()
    return out


# ---------------------------------------------------------------- lpm-graph
def run_ours(args) -> dict:
    import torch

    from lpm_graph import PopulationGraph, simulate
    from lpm_graph.protocols import SEIRM

    torch.set_num_threads(args.threads)

    def build():
        pairs, age, source = load_population(args)
        graph = PopulationGraph.from_edge_index(pairs, age.numel(), undirected=True)
        graph.set_node_attrs("agent", age_group=age)
        return graph, source

    t_build, (graph, source) = timed(build)
    steps = args.steps
    model = SEIRM(2.5, 0.02)

    def forward():
        with torch.no_grad():
            return simulate(model, graph, steps, initial_infected=0.01, seed=0)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        traj = simulate(model, graph, steps, initial_infected=0.01, seed=0)
        (traj.flows["infections"].sum() + traj.counts["M"][-1]).backward()
        return traj

    out = {"source": source, "build": t_build, "directed_edges": graph.num_edges(), "cases": {}}
    for key, fn in {"a": forward, "b": forward_backward}.items():
        fn()  # warm-up (builds the CSR once)
        reset_peak_rss()
        cpu = cpu_sample()
        times, traj = [], None
        for _ in range(args.repeats):
            traj = None
            t, traj = timed(fn)
            times.append(t)
        rss = peak_rss_gib(since_reset=True)
        info = {
            "infections": float(traj.flows["infections"].sum()),
            "deaths": float(traj.counts["M"][-1]),
        }
        if key == "b":
            info["grads"] = {
                name: p.grad.view(-1)[:3].tolist()
                for name, p in model.named_parameters()
                if p.grad is not None
            }
        out["cases"][key] = {"time": statistics.median(times), "rss": rss, **info}
        out["cases"][key]["other"] = other_load(cpu)
    out["torch"] = torch.__version__
    out["rss_total"] = peak_rss_gib()
    return out


# ---------------------------------------------------------------- driver
def child(args, which: str) -> dict:
    """Run one system in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, __file__, "--child", which, "--num-agents", str(args.num_agents)]
    cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads)]
    cmd += ["--data-dir", str(args.data_dir)] * (args.data_dir is not None)
    cmd += ["--synthetic"] * args.synthetic + ["--keep-nx-graph"] * args.keep_nx_graph
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        error = next((x for x in reversed(lines) if x and not x.startswith(" ")), "no output")
        return {"error": error, "returncode": proc.returncode, "wall": wall}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": wall}


def table(args, at: dict | None, ours: dict) -> str:
    n, steps = args.num_agents, args.steps
    rate = lambda t: f"{n * steps / t:.3g}"  # noqa: E731
    gib = lambda x: "" if x is None else f"{x:.2f}"  # noqa: E731
    row = lambda sys_, what_, case: (  # noqa: E731
        f"| {sys_} | {what_} | {case['time']:.3f} | {rate(case['time'])} | {gib(case['rss'])} "
        f"| {gib(case.get('other'))} |"
    )
    lines = [
        f"N = {n:,} ({ours.get('source', '?')}), {steps} daily steps from the initial state "
        f"(1% infected), median of {args.repeats}, torch {ours.get('torch', '?')} with "
        f"{args.threads} thread(s)",
        "",
        "| system | measurement | time (s) | agent-steps/s | peak RSS (GiB) | other load |",
        "|---|---|---:|---:|---:|---:|",
    ]
    what = {"a": "(a) forward, no_grad", "b": "(b) forward + backward"}
    at_name = f"AgentTorch {AT_VERSION} COVID"
    notes = []
    if at is not None and "error" in at:
        lines.append(f"| {at_name} | failed: `{at['error']}` | | | | |")
        notes.append(
            f"AgentTorch failed (exit {at['returncode']}); install it with `pip install "
            f"--no-deps agent-torch=={AT_VERSION}` and `pip install omegaconf epiweeks`, and see "
            "the module docstring for the workarounds this script applies"
        )
    elif at is not None:
        at_name = f"AgentTorch {at['version']} COVID"
        lines.append(f"| {at_name} | population build + input files (not timed) | "
                     f"{at['build']:.2f} | | | |")  # fmt: skip
        lines.append(f"| {at_name} | runner.init() before each run (not timed) | "
                     f"{at['init']:.2f} | | | |")  # fmt: skip
        for key, case in at["cases"].items():
            lines.append(row(at_name, what[key], case))
    if "error" in ours:
        lines.append(f"| lpm-graph | failed: `{ours['error']}` | | | | |")
    else:
        lines.append(f"| lpm-graph SEIRM | graph build (not timed) | {ours['build']:.2f} | | | |")
        for key, case in ours["cases"].items():
            lines.append(row("lpm-graph SEIRM", what[key], case))
    lines.append("")
    if at is not None and "error" not in at and "error" not in ours:
        for key in ("a", "b"):
            ratio = at["cases"][key]["time"] / ours["cases"][key]["time"]
            lines.append(f"- {what[key]}: lpm-graph / AgentTorch agent-steps/s = **{ratio:.1f}x**")
    if at is not None and "error" not in at:
        a, b = at["cases"]["a"], at["cases"]["b"]
        lines.append(
            f"- AgentTorch: {at['directed_edges']:,} directed edges; in (a) "
            f"{a['infections']:.0f} new infections and {a['deaths']:.1f} deaths (expected "
            f"count) over the run, integer disease stages: {a['integer_stages']}; "
            f"d loss / d R2 (weekly R) = {b.get('dR2')}; whole child process peak RSS "
            f"{at['rss_total']:.2f} GiB"
        )
        if at["notes"]:
            notes += at["notes"]
        if args.keep_nx_graph:
            notes.append("networkx graph kept in the state (--keep-nx-graph)")
    elif at is None:
        lines.append("- AgentTorch skipped (--skip-agenttorch)")
    if "error" not in ours:
        a, b = ours["cases"]["a"], ours["cases"]["b"]
        grads = ", ".join(f"{k} {v[0]:.3g}" for k, v in b.get("grads", {}).items())
        lines.append(
            f"- lpm-graph: {ours['directed_edges']:,} directed edges; in (a) "
            f"{a['infections']:.0f} new infections and {a['deaths']:.0f} deaths; gradients "
            f"(first entry): {grads}; whole child process peak RSS {ours['rss_total']:.2f} GiB"
        )
    lines.append(
        "- peak RSS: VmHWM from the case's start, including the state built before it (for "
        "AgentTorch its `state_trajectory`, a copy of the state after every substep)"
    )
    lines.append(
        "- other load: mean number of cores kept busy by other processes during the case "
        f"(from /proc/stat; this machine has {os.cpu_count()}); above ~0.2 the times are not "
        "trustworthy, as torch's threads wait on each other"
    )
    lines += [f"- {x}" for x in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-agents", type=int, default=FRANKLIN)
    p.add_argument("--steps", type=int, default=21)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/agenttorch_covid.md"))
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder of GradABM's 25011_*.csv (default: the copy bundled with lpm-graph)",
    )
    p.add_argument("--synthetic", action="store_true", help="synthetic population even at 70,916")
    p.add_argument("--skip-agenttorch", action="store_true")
    p.add_argument(
        "--keep-nx-graph",
        action="store_true",
        help="keep AgentTorch's networkx graph in its state (deep-copied per substep)",
    )
    p.add_argument("--child", choices=["agenttorch", "ours"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = run_agenttorch(args) if args.child == "agenttorch" else run_ours(args)
        print(json.dumps(result))
        return
    print(f"AgentTorch COVID vs lpm-graph SEIRM: N = {args.num_agents:,} ...", flush=True)
    at = None
    if not args.skip_agenttorch:
        at = child(args, "agenttorch")
        print(f"  AgentTorch done ({at['wall']:.0f} s)", flush=True)
    ours = child(args, "ours")
    text = table(args, at, ours)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
