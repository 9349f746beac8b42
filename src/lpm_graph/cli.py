"""The ``lpm-graph`` command line: ``run``, ``bench``, ``calibrate``, ``demo`` and ``info``.

Bad arguments, missing files and unavailable devices end with one line on stderr and exit
status 2; see ``lpm-graph <command> --help``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from . import __version__

if TYPE_CHECKING:
    from .graph import PopulationGraph
    from .protocols import Protocol
    from .simulator import Trajectory
    from .train.experiment import ExperimentResult, ExperimentState


class UsageError(ValueError):
    """A bad argument found after parsing (a missing file, an unavailable device, ...)."""


def _demo(args: argparse.Namespace) -> int:
    from .datasets import franklin_contact_network
    from .protocols import SIR
    from .simulator import simulate

    graph = franklin_contact_network().to(_device(args.device))
    sir = SIR(args.transmission_rate, args.recovery_rate, dt=args.dt, order=args.order)
    print(f"{graph}  (Franklin County, MA; bundled GradABM contact network)")
    print(sir.plan())
    start = time.perf_counter()
    with torch.no_grad():
        traj = simulate(
            sir,
            graph,
            args.steps,
            initial_infected=args.initial_infected,
            seed=args.seed,
            progress=args.progress,
        )
    elapsed = time.perf_counter() - start
    n = graph.num_nodes()
    every = max(1, args.steps // 10)
    print(f"\n{'t':>6} {'S':>8} {'I':>8} {'R':>8} {'new infections':>15}")
    for k in range(0, args.steps + 1, every):
        new = "" if k == 0 else f"{int(traj.flows['infections'][k - 1]):>15,}"
        row = [int(traj.counts[c][k]) for c in "SIR"]
        print(f"{k * args.dt:>6g} {row[0]:>8,} {row[1]:>8,} {row[2]:>8,} {new}")
    attack = 1 - float(traj.counts["S"][-1]) / n
    speed = n * args.steps / elapsed
    transmissibility = float(sir.transmissibility())
    print(f"\nfinal attack rate {attack:.3f}; transmissibility T = {transmissibility:.3f}")
    print(f"{args.steps} steps in {elapsed:.2f} s ({speed:.3g} agent-steps/s on {graph.device})")
    return 0


def _info(_args: argparse.Namespace) -> int:
    import importlib.metadata as metadata

    import numpy
    import torch_geometric

    from .ops.aggregate import BACKENDS, torch_scatter_available

    print(f"lpm-graph {__version__}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"torch_geometric {torch_geometric.__version__}, numpy {numpy.__version__}"
    )
    print(f"threads: {torch.get_num_threads()}")
    if torch.cuda.is_available():
        names = ", ".join(
            f"cuda:{k} {torch.cuda.get_device_name(k)}" for k in range(torch.cuda.device_count())
        )
        print(f"cuda available: True (CUDA {torch.version.cuda}; {names})")
    else:
        why = "torch built without CUDA" if torch.version.cuda is None else "no usable GPU"
        print(f"cuda available: False ({why})")
    available = [b for b in BACKENDS if b != "torch_scatter" or torch_scatter_available()]
    print(f"aggregation backends: {', '.join(available)} (default: csr)")
    print("optional packages:")
    for extra, package, purpose in _EXTRAS:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            install = f"pip install 'lpm-graph[{extra}]'" if extra else f"pip install {package}"
            status = f"not installed ({install})"
        else:
            status = version
            reason = _import_problem(package)
            if reason is not None:
                status = f"{version}, does not import: {reason}"
        print(f"  {package:<14} {purpose:<42} {status}")
    return 0


# (extra, distribution, what it is for); versions come from the installed metadata, so
# packages that print on import (covasim) or import slowly (ray) are not imported.
_EXTRAS = (
    ("plot", "matplotlib", "plots (lpm_graph.plot, `lpm-graph run`)"),
    ("parquet", "pyarrow", "Parquet edge lists and node tables"),
    ("scatter", "torch-scatter", "the torch_scatter aggregation backend"),
    ("dgl", "dgl", "DGL interop (to_dgl / from_dgl)"),
    ("", "pymetis", "METIS partitions for distributed runs"),
    ("", "ray", "ensembles and sweeps on Ray"),
    ("bench", "starsim", "benchmark comparisons"),
    ("bench", "covasim", "benchmark comparisons"),
    ("bench", "EoN", "benchmark comparisons (Gillespie SIR)"),
    ("", "pandas", "Trajectory.to_dataframe"),
)


def _import_problem(package: str) -> str | None:
    """Why an installed package with compiled parts does not import (``None`` if it does)."""
    if package == "dgl":
        from .graph.interop import _dgl

        try:
            _dgl()
        except ImportError as err:
            return str(err)
        return None
    module = {"torch-scatter": "torch_scatter", "pymetis": "pymetis"}.get(package)
    if module is None:
        return None
    try:
        __import__(module)
    except Exception as err:  # a build for another torch raises OSError / RuntimeError too
        return f"{type(err).__name__}: {err}"
    return None


def _calibrate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .datasets.series import COUNTY_NAMES, COUNTY_POPULATIONS
    from .outputs import OutputFolder
    from .train.experiment import CountyExperiment, ExperimentState, run_county_experiment

    given = {
        "county": args.county,
        "population": args.population,
        "agents": args.agents,
        "start": args.start,
        "forecast_date": args.forecast_date,
        "epochs": args.epochs,
        "patience": args.patience,
        "lr": args.lr,
        "budget": args.budget,
        "method": args.method,
        "uncertainty_seeds": args.seeds,
        "seed": args.seed,
    }
    given = {k: v for k, v in given.items() if v is not None}
    cfg = CountyExperiment.quick(**given) if args.quick else CountyExperiment(**given)
    output = args.output or ("calibration-quick" if args.quick else "calibration")
    out = OutputFolder(
        output,
        "calibrate",
        "results.json",
        ("metrics.md", "forecast.png"),
        legacy=("config", "metrics"),
    )
    state = ExperimentState(out.path / _STATE)
    if not args.restart:
        _refuse_another_configuration(out.path, state, asdict(cfg))
    resumed = state.config is not None and not args.restart

    name = COUNTY_NAMES[cfg.county]
    if cfg.county == "25011":
        people = "its real contact network of 70,916 agents"
    else:
        population = cfg.population or COUNTY_POPULATIONS[cfg.county]
        people = f"{population:,.0f} people simulated by {cfg.agents:,} synthetic agents"
    budget = cfg.budget or cfg.epochs
    print(f"calibrating {name} County ({cfg.county}): {people}")
    print(
        f"  {cfg.epochs} epochs per trained model (patience {cfg.patience}), {budget} "
        f"{cfg.method} runs, {cfg.uncertainty_seeds} stochastic runs per simulator; fit from "
        f"{cfg.start}, forecast from {cfg.forecast_date}, seed {cfg.seed}; "
        f"{args.threads} CPU thread(s)"
    )
    if args.quick:
        print(
            "  quick profile (--quick): a look at the whole run in about a minute; the full "
            "default (5-10 minutes) drops --quick"
        )
    if resumed:
        print(f"  continuing the run recorded in {state.folder} (--restart starts afresh)")
    else:
        print(f"  progress is recorded in {state.folder}: run the same command to continue")
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = run_county_experiment(
            cfg, state=state, restart=args.restart, progress=not args.no_progress
        )
    except KeyboardInterrupt:
        print(
            f"\nstopped; the run so far is in {state.folder}: run the same command again to "
            "continue it",
            file=sys.stderr,
        )
        raise
    finally:
        torch.set_num_threads(threads)
    print(f"\nforecasts from {result.dates[result.forecast_start]} (weekly deaths, reported):\n")
    print(result.table())
    print(f"\n{'model':<48} {'runs':>6} {'time (s)':>9} {'train loss':>11}")
    for model, seconds in result.wall_time.items():
        runs, loss = result.evaluations[model], result.train_loss[model]
        print(f"{model:<48} {runs:>6} {seconds:>9.1f} {loss:>11.4g}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s{' (this session)' if resumed else ''}")
    with out.writing() as stage:
        (stage / "metrics.md").write_text(result.table() + "\n")
        _plot_calibration(result, cfg.county, stage / "forecast.png")
        out.commit(
            {
                "config": asdict(cfg),
                "profile": "quick" if args.quick else "default",
                "state": _STATE,
                "metrics": result.metrics,
                "wall_time": result.wall_time,
                "evaluations": result.evaluations,
                "train_loss": result.train_loss,
                "parameters": result.parameters,
            }
        )
    if (out.path / "forecast.png").exists():
        print(f"plot: {out.path / 'forecast.png'}")
    print(f"results: {out.path / 'results.json'}, {out.path / 'metrics.md'}")
    return 0


_STATE = "calibrate-state"  # the folder of a calibrate run's state, inside --output


def _refuse_another_configuration(
    folder: Path, state: ExperimentState, config: dict[str, Any]
) -> None:
    """A UsageError if ``folder`` holds the state, or else the finished results, of a run
    with another configuration (they are replaced only with --restart)."""
    changed = state.differences(config)
    what = f"the state of an unfinished or finished run ({folder / _STATE})"
    if state.config is None:
        try:
            record = json.loads((folder / "results.json").read_text())
        except (OSError, ValueError):
            return
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            return
        saved = record["config"]
        plain = json.loads(json.dumps(config, default=str))
        changed = {k: (saved.get(k), plain.get(k)) for k in sorted({*saved, *plain})
                   if saved.get(k) != plain.get(k)}  # fmt: skip
        what = f"the results of a run ({folder / 'results.json'})"
    if changed:
        listed = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise UsageError(
            f"--output {str(folder)!r} holds {what} with other settings ({listed}). Run "
            "with the same settings to continue or redo it, add --restart to discard it and "
            "start afresh, or choose another --output."
        )


def _plot_calibration(result: ExperimentResult, county: str, path: Path) -> None:
    """Draw the fits and forecasts to ``path`` (nothing, with a note, without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install lpm-graph[plot])")
        return
    from .train.plot import plot_forecast

    fig, ax = plt.subplots(figsize=(10, 5))
    plot_forecast(
        result.predictions,
        result.reported,
        bands=result.runs,
        dates=result.dates,
        train_end=result.forecast_start,
        title=f"County {county}: daily deaths, fit and forecast",
        ylabel="daily deaths (reported)",
        ax=ax,
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------- run

PROTOCOLS = ("sir", "seirm", "staged-seirm")

# The protocol options of `run`, their defaults, and which protocols take them.
_PROTOCOL_OPTIONS: dict[str, dict[str, Any]] = {
    "sir": {"transmission_rate": 0.1, "recovery_rate": 0.2, "order": "infect_first"},
    "seirm": {"r0": 2.5, "mortality": 0.01},
    "staged-seirm": {"r0": 2.5},
}
_FLAGS = {
    "transmission_rate": "--transmission-rate",
    "recovery_rate": "--recovery-rate",
    "order": "--order",
    "r0": "--r0",
    "mortality": "--mortality",
}

_LABELS = {
    "transmission_rate": "transmission rate",
    "recovery_rate": "recovery rate",
    "r0": "R0",
    "mortality": "mortality",
}


def _device(text: str) -> torch.device:
    """The torch device named ``text``, or a UsageError saying why it cannot be used."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text!r} is not a device; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU found"
            raise UsageError(
                f"--device {text}: CUDA is not available here ({why}; torch "
                f"{torch.__version__}); use --device cpu."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {text}: this machine has {count} GPU(s), cuda:0..")
    elif device.type != "cpu":
        raise UsageError(f"--device {text}: lpm-graph runs on cpu or cuda.")
    return device


def _dataset(args: argparse.Namespace) -> tuple[PopulationGraph, str]:
    """The graph named by ``--dataset`` and a description of it."""
    spec = args.dataset
    if args.nodes is not None and (spec == "franklin" or spec.startswith("synthetic:")):
        raise UsageError("--nodes goes with an edge-list file as --dataset.")
    if spec == "franklin":
        from .datasets import franklin_contact_network

        return franklin_contact_network(), "Franklin County, MA (bundled GradABM network)"
    if spec.startswith("synthetic:"):
        from .datasets import SyntheticPopulation

        size = spec.split(":", 1)[1].replace("_", "")
        if not size.isdigit() or int(size) < 1:
            raise UsageError(
                f"--dataset {spec!r}: give the number of agents, e.g. synthetic:10000."
            )
        n = int(size)
        return SyntheticPopulation(n, seed=args.seed)[0], f"a synthetic population of {n:,}"
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"--dataset {spec!r}: no such file; give franklin, synthetic:N or an edge-list file."
        )
    if args.nodes is not None and not Path(args.nodes).is_file():
        raise UsageError(f"--nodes {args.nodes!r}: no such file.")
    from .graph import PopulationGraph

    graph = PopulationGraph.from_files(path, nodes=args.nodes, undirected=not args.directed)
    return graph, f"{path.name}"


def _protocol_values(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol options of ``--protocol`` (given or default); an option given for
    another protocol is an error."""
    allowed = _PROTOCOL_OPTIONS[args.protocol]
    for name, flag in _FLAGS.items():
        if getattr(args, name) is not None and name not in allowed:
            takes = [p for p, options in _PROTOCOL_OPTIONS.items() if name in options]
            raise UsageError(
                f"{flag} does not apply to --protocol {args.protocol} (only to {', '.join(takes)})."
            )
    return {k: default if getattr(args, k) is None else getattr(args, k) for k, default in
            allowed.items()}  # fmt: skip


def _protocol(args: argparse.Namespace, values: dict[str, Any], graph: PopulationGraph) -> Protocol:
    """The protocol named by ``--protocol`` with the option ``values``."""
    from .protocols import SEIRM, SIR, StagedSEIRM

    if args.protocol == "sir":
        rates = values["transmission_rate"], values["recovery_rate"]
        return SIR(*rates, dt=args.dt, order=values["order"], learnable=False)
    if "age_group" not in graph.node_attrs():
        raise UsageError(
            f"--protocol {args.protocol} needs the agents' age groups (an age_group column, "
            "0..7): give --nodes with a node table that has one, or use --protocol sir."
        )
    if args.protocol == "seirm":
        return SEIRM(values["r0"], values["mortality"], dt=args.dt, by_age=True, learnable=False)
    return StagedSEIRM(values["r0"], dt=args.dt, by_age=True, learnable=False)


def _run(args: argparse.Namespace) -> int:
    from .outputs import OutputFolder
    from .protocols import AGE_GROUPS
    from .simulator import simulate

    device = _device(args.device)
    values = _protocol_values(args)
    graph, described = _dataset(args)
    protocol = _protocol(args, values, graph)
    if args.initial_infected > graph.num_nodes():
        raise UsageError(
            f"--initial-infected {args.initial_infected} is more than the "
            f"{graph.num_nodes():,} agents."
        )
    graph, protocol = graph.to(device), protocol.to(device)
    out = OutputFolder(args.output, "run", "run.json", ("results.csv", "epidemic.png"))
    edges = sum(graph.num_edges(r) for r in graph.relations)
    reps = args.replicates
    print(
        f"{args.protocol} on {described}: {graph.num_nodes():,} agents, {edges:,} edges; "
        f"{args.steps} steps of {args.dt:g} day, {reps} replicate(s), seed {args.seed}, "
        f"{device}"
    )
    start = time.perf_counter()
    with torch.no_grad():
        traj = simulate(
            protocol,
            graph,
            args.steps,
            initial_infected=args.initial_infected,
            seed=args.seed,
            replicates=reps if reps > 1 else None,
            mode=args.mode,
            progress=not args.no_progress,
        )
    elapsed = time.perf_counter() - start
    final = _print_table(traj)
    print(f"{args.steps} steps in {elapsed:.2f} s")

    with out.writing() as stage:
        _write_table(traj, stage / "results.csv")
        plot = _plot_run(traj, args, protocol, values, described, stage / "epidemic.png")
        files = {"table": "results.csv", "plot": None if plot is None else plot.name}
        out.commit(
            {
                "command": "run",
                "arguments": {k: v for k, v in vars(args).items() if k != "func"},
                "protocol": {"name": args.protocol, "class": type(protocol).__name__, **values},
                "dataset": {
                    "description": described,
                    "agents": graph.num_nodes(),
                    "edges": edges,
                    "relations": [r[1] for r in graph.relations],
                },
                "age_groups": list(AGE_GROUPS) if args.protocol != "sir" else None,
                "final": final,
                "elapsed_s": round(elapsed, 3),
                "device": str(device),
                "versions": {"lpm-graph": __version__, "torch": torch.__version__},
                "files": files,
            }
        )
    written = ("results.csv", "run.json", files["plot"])
    print(f"wrote {', '.join(str(out.path / f) for f in written if f)}")
    return 0


def _print_table(traj: Trajectory) -> dict[str, float]:
    """Print about ten rows of counts (means over replicates); return the final ones."""
    base = 1 if traj.replicates is None else 2
    counts = [c for c, v in traj.counts.items() if v.dim() == base]  # not the per-age ones

    def mean(value: torch.Tensor) -> float:
        return float(value.to(torch.float64).mean())

    steps = traj.steps
    every = max(1, steps // 10)
    rows = sorted({*range(0, steps + 1, every), steps})
    width = {c: max(9, len(c) + 1) for c in counts}
    header = f"{'t':>6}" + "".join(f"{c:>{width[c]}}" for c in counts)
    new = "infections" in traj.flows
    print("\n" + header + (f"{'new infections':>16}" if new else ""))
    for k in rows:
        line = f"{float(traj.times[k]):>6g}"
        line += "".join(f"{mean(traj.counts[c][k]):>{width[c]},.0f}" for c in counts)
        if new:
            cell = "" if k == 0 else f"{mean(traj.flows['infections'][k - 1]):,.0f}"
            line += f"{cell:>16}"
        print(line)
    return {c: mean(traj.counts[c][-1]) for c in counts}


def _write_table(traj: Trajectory, path: Path) -> None:
    """One row per step (and replicate): ``t``, the counts, ``new_<flow>`` (empty at t = 0);
    a per-age series ``X_by_age`` is one column per age group, ``X_by_age_0`` ... (the
    columns of :meth:`Trajectory.to_dataframe`, without needing pandas)."""
    base = 1 if traj.replicates is None else 2
    names, columns = [], []

    def add(name: str, value: torch.Tensor) -> None:
        value = value.detach().cpu().to(torch.float64)
        if value.dim() > base:
            for g in range(value.shape[1]):
                names.append(f"{name}_{g}")
                columns.append(value[:, g])
        else:
            names.append(name)
            columns.append(value)

    for name, value in traj.counts.items():
        add(name, value)
    for name, value in traj.flows.items():
        blank = value.new_full((1, *value.shape[1:]), float("nan"))
        add(f"new_{name}", torch.cat([blank, value.to(blank.dtype)]))
    table = torch.stack(columns, 1).numpy()  # [T + 1, C] or [T + 1, C, R]
    times = traj.times.tolist()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        reps = traj.replicates
        writer.writerow((["replicate"] if reps else []) + ["t", *names])
        for r in range(reps or 1):
            block = table if reps is None else table[..., r]
            for k, t in enumerate(times):
                cells = ["" if math.isnan(x) else f"{x:.10g}" for x in block[k].tolist()]
                writer.writerow(([r] if reps else []) + [f"{t:g}", *cells])


def _plot_run(
    traj: Trajectory,
    args: argparse.Namespace,
    protocol: Protocol,
    values: dict[str, Any],
    described: str,
    path: Path,
) -> Path | None:
    """Draw the run's epidemic curves to ``path`` (``None``, with a note, without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "no plot: matplotlib is not installed (pip install 'lpm-graph[plot]')",
            file=sys.stderr,
        )
        return None
    from .plot import plot_epidemic

    reps = args.replicates
    band = f"; median and 5-95% of {reps} replicates" if reps > 1 else ""
    shown = ", ".join(f"{_LABELS[k]} {v:g}" for k, v in values.items() if k != "order")
    name = type(protocol).__name__
    title = f"{name} on {described}\n{shown}, seed {args.seed}{band}"
    fig = plot_epidemic(traj, title=title, yscale="log" if args.log_y else "linear", path=path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- bench


def _bench(args: argparse.Namespace) -> int:
    from .datasets import erdos_renyi
    from .outputs import OutputFolder
    from .protocols import SIR
    from .simulator import simulate

    device = _device(args.device)
    out = None if args.output is None else OutputFolder(args.output, "bench", "bench.json")
    graph = erdos_renyi(args.agents, args.degree, seed=args.seed).to(device)
    reps = args.replicates if args.replicates > 1 else None
    infected = max(1, args.agents // 1000)
    columns = args.replicates
    print(
        f"SIR on an Erdos-Renyi graph: {args.agents:,} agents, mean degree {args.degree:g} "
        f"({graph.num_edges():,} directed edges), {args.steps} steps, {columns} replicate(s), "
        f"{device}, {torch.get_num_threads()} CPU threads"
    )

    def once(steps: int, backward: bool) -> float:
        sir = SIR(0.05, 0.1).to(device)
        _sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            traj = simulate(
                sir, graph, steps, initial_infected=infected, seed=args.seed, replicates=reps
            )
            if backward:
                (traj.counts["R"][-1].sum() + traj.counts["I"][-1].sum()).backward()
        _sync(device)
        return time.perf_counter() - start

    results = {}
    print(f"\n{'pass':<20} {'best time (s)':>14} {'agent-steps/s':>14} {'peak memory':>12}")
    for name, backward in (("forward", False), ("forward + backward", True)):
        once(min(2, args.steps), backward)  # warm-up: caches, allocator, kernels
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = min(once(args.steps, backward) for _ in range(args.repeats))
        speed = args.agents * args.steps * columns / seconds if seconds > 0 else math.inf
        memory = _peak_memory(device)
        results[name] = {"seconds": seconds, "agent_steps_per_s": speed, "peak_bytes": memory}
        shown = "" if memory is None else f"{memory / 2**20:,.0f} MiB"
        print(f"{name:<20} {seconds:>14.3f} {speed:>14.3g} {shown:>12}")
    where = "GPU memory allocated" if device.type == "cuda" else "process peak resident memory"
    print(f"(peak memory: {where}; best of {args.repeats})")
    print(
        "Full benchmarks (scale to 1e7 agents, exactness against Gillespie, Starsim, AgentTorch, "
        "secure runs): benchmarks/ and benchmarks/README.md in the source repository."
    )
    if out is not None:
        with out.writing():
            out.commit(
                {
                    "arguments": {k: v for k, v in vars(args).items() if k != "func"},
                    "edges": graph.num_edges(),
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "versions": {"lpm-graph": __version__, "torch": torch.__version__},
                    "results": results,
                }
            )
        print(f"wrote {out.path / 'bench.json'}")
    return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB else


# ---------------------------------------------------------------------------- parser


def _number(kind: type, low: float, strict: bool) -> Any:
    """An argparse type: ``kind`` values ``>= low`` (``> low`` when ``strict``)."""
    bound = f"{'>' if strict else '>='} {low:g}"
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {noun} {bound}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


_non_negative_int = _number(int, 0, strict=False)
_positive_int = _number(int, 0, strict=True)
_non_negative_float = _number(float, 0, strict=False)
_positive_float = _number(float, 0, strict=True)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_RUN_EPILOG = """\
examples:
  lpm-graph run                                   # SIR on Franklin County, 120 days
  lpm-graph run --protocol seirm --r0 2.8 --steps 90 --replicates 4
  lpm-graph run --dataset synthetic:100000 --protocol staged-seirm --device cuda
  lpm-graph run --dataset contacts.csv --nodes people.csv --protocol seirm

writes, under --output: results.csv (one row per step and replicate: t, the count of every
compartment, new_<flow> for the flows of the step, and X_by_age_0..7 per age group for the
SEIRM models), run.json (the arguments, dataset, parameters and final counts, and
"complete": true) and epidemic.png (needs matplotlib: pip install 'lpm-graph[plot]').
The files of an earlier run there are replaced all together once the new ones are written:
an interrupted run leaves the earlier one whole. A folder holding such files that no
`lpm-graph run` wrote is refused; other files in the folder are left alone.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lpm-graph",
        description="Large Population Models as message passing.",
        epilog="See `lpm-graph <command> --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"lpm-graph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    run = sub.add_parser(
        "run",
        help="run an epidemic protocol on a dataset; write a table, a JSON record and a plot",
        description="Run an epidemic protocol on a population graph, with a progress bar;\n"
        "write the counts and flows of every step, the arguments and a plot.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="sir",
        help="network SIR; SEIRM (GradABM's age-structured COVID model); StagedSEIRM "
        "(Covasim's age-stratified progression); the SEIRM models need age groups "
        "(default sir)",
    )
    run.add_argument(
        "--dataset",
        default="franklin",
        metavar="DATASET",
        help="franklin (the bundled Franklin County, MA network, 70,916 agents with age "
        "groups), synthetic:N (a synthetic population of N agents: households, schools, "
        "work, community), or the path of an edge-list file (src,dst per line; "
        ".csv, .txt, .gz, .parquet) (default franklin)",
    )
    run.add_argument(
        "--nodes",
        metavar="FILE",
        help="with an edge-list file: a node table (id column, e.g. an age_group column "
        "0..7, needed by the SEIRM models)",
    )
    run.add_argument(
        "--directed",
        action="store_true",
        help="with an edge-list file: each line is one directed edge src -> dst (default: an "
        "undirected contact, both directions)",
    )
    run.add_argument(
        "--steps", type=_non_negative_int, default=120, metavar="T", help="steps (default 120)"
    )
    run.add_argument(
        "--dt",
        type=_positive_float,
        default=1.0,
        metavar="DAYS",
        help="step length in days (default 1)",
    )
    run.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        metavar="SEED",
        help="random seed of the run and of a synthetic population (default 0)",
    )
    run.add_argument(
        "--replicates",
        type=_positive_int,
        default=1,
        metavar="R",
        help="independent runs at once; the plot shows their median and 5-95%% band (default 1)",
    )
    run.add_argument(
        "--initial-infected",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="agents infected at t = 0, chosen at random per replicate (default 10)",
    )
    run.add_argument(
        "--mode",
        choices=["stochastic", "expected"],
        default="stochastic",
        help="exact random draws, or expected values (mean field over the graph, "
        "deterministic) (default stochastic)",
    )
    sir = run.add_argument_group("SIR options (--protocol sir)")
    sir.add_argument(
        "--transmission-rate",
        type=_non_negative_float,
        metavar="RATE",
        help="per-contact transmission rate per day (default 0.1)",
    )
    sir.add_argument(
        "--recovery-rate",
        type=_non_negative_float,
        metavar="RATE",
        help="recovery rate per day (default 0.2)",
    )
    sir.add_argument(
        "--order",
        choices=["infect_first", "recover_first"],
        help="phase order within a step (default infect_first)",
    )
    seirm = run.add_argument_group("SEIRM options (--protocol seirm, staged-seirm)")
    seirm.add_argument(
        "--r0",
        type=_non_negative_float,
        metavar="R0",
        help="reproduction number R of the force of infection (default 2.5)",
    )
    seirm.add_argument(
        "--mortality",
        type=_non_negative_float,
        metavar="P",
        help="seirm only: probability of death on leaving I, in [0, 1] (default 0.01; "
        "staged-seirm takes its deaths from Covasim's table by age)",
    )
    _common(run, output="lpm-graph-run", output_help="folder for the results")
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it goes to stderr)"
    )
    run.add_argument("--log-y", action="store_true", help="plot counts on a log scale")
    run.set_defaults(func=_run)

    bench = sub.add_parser(
        "bench",
        help="a quick speed check: SIR steps per second, forward and forward + backward",
        description="A quick built-in speed check: network SIR (transmission rate 0.05, "
        "recovery rate 0.1, 0.1% of the agents infected at t = 0) on an Erdos-Renyi graph; "
        "agent-steps per second of a forward run (no gradients) and of a forward + backward "
        "pass (the gradient of the final R + I through the straight-through draws), and the "
        "peak memory. The full benchmarks are in benchmarks/ in the source repository.",
    )
    bench.add_argument(
        "--agents", type=_positive_int, default=100_000, help="agents (default 100000)"
    )
    bench.add_argument(
        "--degree", type=_positive_float, default=10.0, help="mean degree (default 10)"
    )
    bench.add_argument("--steps", type=_positive_int, default=20, help="steps (default 20)")
    bench.add_argument(
        "--replicates", type=_positive_int, default=1, help="replicate columns (default 1)"
    )
    bench.add_argument(
        "--repeats", type=_positive_int, default=3, help="timed runs; the best is kept (default 3)"
    )
    bench.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the graph and runs (default 0)"
    )
    _common(bench, output=None, output_help="also write bench.json there (default: nothing)")
    bench.set_defaults(func=_bench)

    demo = sub.add_parser("demo", help="network SIR on the bundled Franklin County contact network")
    demo.add_argument(
        "--steps", type=_non_negative_int, default=120, help="number of steps (default 120)"
    )
    demo.add_argument(
        "--dt", type=_positive_float, default=1.0, help="step length in days (default 1)"
    )
    demo.add_argument(
        "--transmission-rate",
        type=_non_negative_float,
        default=0.1,
        help="per-contact transmission rate per day (default 0.1)",
    )
    demo.add_argument(
        "--recovery-rate",
        type=_non_negative_float,
        default=0.2,
        help="recovery rate per day (default 0.2)",
    )
    demo.add_argument(
        "--order",
        choices=["infect_first", "recover_first"],
        default="infect_first",
        help="phase order within a step",
    )
    demo.add_argument(
        "--initial-infected",
        type=_non_negative_int,
        default=10,
        help="number of initially infected agents (default 10)",
    )
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", default="cpu", help="torch device (default cpu)")
    demo.add_argument("--progress", action="store_true", help="show a progress bar")
    demo.set_defaults(func=_demo)
    cal = sub.add_parser(
        "calibrate",
        help="calibrate SEIRM to a Massachusetts county's 2020 deaths and forecast 1-4 weeks",
        description="Fit three gradient-trained models (the agent-based SEIRM driven by "
        "CalibNN, the same with free weekly parameters, and the SEIRM ODE) and one "
        "gradient-free fit of the agent-based SEIRM to a county's daily deaths, then score "
        "their 1-4 week forecasts against persistence. Progress bars (stderr) show each "
        "model's epochs, training and validation loss, the gradient-free runs and the "
        "stochastic runs for the bands. The full default (Middlesex, 10,000 agents, 80 epochs) "
        "takes 5-10 minutes on two busy CPU cores; --quick about a minute. The run records its "
        f"progress in DIR/{_STATE} as it goes: run the same command again after an "
        "interruption (Ctrl-C, kill) and it continues, to the same results. A run with other "
        "settings is refused in a folder that holds a run (--restart discards it). Writes "
        "results.json, metrics.md and forecast.png into DIR.",
    )
    cal.add_argument(
        "--county",
        default=None,
        help="FIPS code of a Massachusetts county (default 25017, Middlesex; 25011, "
        "Franklin, runs on its real contact network)",
    )
    cal.add_argument(
        "--population",
        type=_positive_float,
        default=None,
        help="inhabitants the synthetic agents stand for (default: the county's 2019 "
        "population; not 25011)",
    )
    cal.add_argument(
        "--agents",
        type=_positive_int,
        default=None,
        help="synthetic agents (default 10000; --quick 1000; not 25011)",
    )
    cal.add_argument("--start", default=None, help="first simulated day (default 2020-03-01)")
    cal.add_argument(
        "--forecast-date", default=None, help="first forecast day (default 2020-12-04)"
    )
    cal.add_argument(
        "--epochs",
        type=_non_negative_int,
        default=None,
        help="epochs per trained model (default 80; --quick 10)",
    )
    cal.add_argument(
        "--patience", type=_positive_int, default=None, help="early-stopping patience (default 40)"
    )
    cal.add_argument(
        "--lr", type=_positive_float, default=None, help="Adam learning rate (default 0.05)"
    )
    cal.add_argument(
        "--budget",
        type=_positive_int,
        default=None,
        help="runs of the gradient-free fit (default: --epochs; --quick 10)",
    )
    cal.add_argument("--method", default=None, help="gradient-free method (default nelder-mead)")
    cal.add_argument(
        "--seeds",
        type=_non_negative_int,
        default=None,
        help="stochastic runs per simulator for the bands (default 5; --quick 2)",
    )
    cal.add_argument("--seed", type=_non_negative_int, default=None, help="random seed (default 0)")
    cal.add_argument(
        "--quick",
        action="store_true",
        help="the small profile: 1000 agents, 10 epochs, 10 gradient-free runs, 2 seeds "
        "(options given too override it); output calibration-quick",
    )
    cal.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="folder for the results, the plot and the run's state (default calibration; "
        "calibration-quick with --quick)",
    )
    cal.add_argument(
        "--restart",
        action="store_true",
        help="discard the run recorded in DIR (its state, and its results once the new run "
        "finishes) and start afresh",
    )
    cal.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they go to stderr)"
    )
    cal.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="CPU threads of torch (default 1: the runs are thousands of small steps, and "
        "on a busy 2-core machine 2 threads made an epoch 3-30x slower; more can help "
        "Franklin's 70,916 agents on an idle machine)",
    )
    cal.set_defaults(func=_calibrate)
    info = sub.add_parser(
        "info",
        help="versions, devices, aggregation backends and optional packages",
        description="Print the versions of lpm-graph, python, torch, torch_geometric and "
        "numpy; whether CUDA is usable; the aggregation backends; and which optional "
        "packages (extras) are installed and importable.",
    )
    info.set_defaults(func=_info)
    return parser


def _common(parser: argparse.ArgumentParser, output: str | None, output_help: str) -> None:
    """``--device`` and ``--output``, shared by run and bench."""
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N; an error if CUDA is not available (default cpu)",
    )
    default = f" (default {output})" if output is not None else ""
    parser.add_argument("--output", default=output, metavar="DIR", help=f"{output_help}{default}")


def main(argv: list[str] | None = None) -> int:
    """Run ``lpm-graph`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Bad options exit through argparse (status 2); errors found later (a missing file, an
    unavailable device, a value the library refuses) print one line and return 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:
        message = " ".join(str(err).split())
        print(f"lpm-graph {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lpm-graph {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
