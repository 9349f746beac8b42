"""Plots of runs, forecasts, supply chains and small networks (matplotlib, an optional extra).

Every function returns the :class:`matplotlib.figure.Figure` (``plot_forecast``, from
:mod:`lpm_graph.train.plot`, returns its axes), labels its axes, draws a legend or a colorbar
and a title, and saves the figure when given ``path=``. matplotlib is imported on the first
call; without it the call raises an ImportError that names the ``plot`` extra
(``pip install 'lpm-graph[plot]'``).

Runs with replicates (counts ``[T + 1, R]``) are drawn as the median over the replicates with
a shaded 5-95% band (quantiles per step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .train.plot import plot_forecast

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .graph import PopulationGraph
    from .simulator import Trajectory

__all__ = [
    "NETWORK_MAX_NODES",
    "plot_epidemic",
    "plot_forecast",
    "plot_network",
    "plot_supply_chain",
]

NETWORK_MAX_NODES = 500
"""Largest graph :func:`plot_network` draws by default (beyond it a drawing is a hairball and the
spring layout slow)."""

# Fixed colours for the usual compartments, so that S is the same blue in every panel and plot.
_COLOURS = {"S": "tab:blue", "E": "tab:orange", "I": "tab:red", "R": "tab:green", "M": "black"}
_SPARE = (
    "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray",
    "gold", "navy", "teal", "salmon", "lime", "indigo",
)  # fmt: skip
_BAND = (0.05, 0.95)


def _pyplot(what: str) -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            f"{what} needs matplotlib; install it with `pip install 'lpm-graph[plot]'`."
        ) from err
    return plt


def _colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def _numpy(value: Tensor | np.ndarray) -> np.ndarray:
    return torch.as_tensor(value).detach().to(torch.float64).cpu().numpy()


def _draw(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    label: str,
    colour: Any = None,
    log: bool = False,
) -> None:
    """A ``[T]`` series as a line; ``[T, R]`` as the median with a 5-95% band over ``R``.
    With ``log``, values <= 0 are left out (a log axis cannot show them)."""

    def shown(v: np.ndarray) -> np.ndarray:
        return np.where(v > 0, v, np.nan) if log else v

    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        ax.plot(x, shown(y), label=label, color=colour)
        return
    (line,) = ax.plot(x, shown(np.quantile(y, 0.5, axis=1)), label=label, color=colour)
    low, high = np.quantile(y, _BAND, axis=1)
    ax.fill_between(x, shown(low), shown(high), color=line.get_color(), alpha=0.2, linewidth=0)


def _palette(names: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per name: the fixed S / E / I / R / M colours, then spare ones."""
    spare = iter(c for _ in range(len(names) + 1) for c in _SPARE)
    return {n: _COLOURS[n] if n in _COLOURS else next(spare) for n in names}


def _flow_target(flow: str, compartments: Sequence[str]) -> str | None:
    """The compartment a flow moves agents into (``entered_mild`` -> ``mild``), if known."""
    if flow.startswith("entered_"):
        return flow.removeprefix("entered_")
    into_infection = "E" if "E" in compartments else "I"
    return {"infections": into_infection, "onsets": "I", "recoveries": "R", "deaths": "M"}.get(flow)


def _thousands(ax: Axes) -> None:
    """Tick labels like 70,000 on a linear y axis."""
    from matplotlib.ticker import FuncFormatter

    if ax.get_yscale() == "linear":
        ax.yaxis.set_major_formatter(
            FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}")
        )


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _grouped(trajectory: Trajectory) -> set[str]:
    """Names of the per-group series (``I_by_age``, ...): a dimension beyond time and the
    replicates."""
    base = 1 if trajectory.replicates is None else 2  # [T] or [T, R]
    table = {**trajectory.counts, **trajectory.flows}
    return {name for name, value in table.items() if value.dim() > base}


def plot_epidemic(
    trajectory: Trajectory,
    *,
    compartments: Sequence[str] | None = None,
    flows: Sequence[str] | bool = True,
    by_age: str | bool | None = None,
    age_labels: Sequence[str] | None = None,
    time_unit: str = "day",
    yscale: str = "linear",
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Epidemic curves: agents per compartment, new cases per step and, by age, attack rates.

    Up to three panels side by side:

    1. the number of agents in each compartment at ``t = 0, dt, ..., T dt``;
    2. (``flows``) the flows of each step (new infections, recoveries, deaths, ...), drawn at
       the end of their step;
    3. (``by_age``) one line per age group of a per-age series: a flow (default
       ``"infections_by_age"`` when the run recorded it, e.g. ``SEIRM(by_age=True)``) is drawn
       cumulated and, when every compartment has its ``*_by_age`` count, per 1,000 agents of
       the age group (the attack rate by age); a count (``"I_by_age"``) as it is.

    With replicates every line is the median over the replicates with a 5-95% band.

    Args:
        trajectory: the run (:func:`~lpm_graph.simulate`'s result).
        compartments: the counts to draw (default: every count that is not per group).
        flows: ``True`` (default) every flow that is not per group, a list of flow names, or
            ``False`` for no flow panel.
        by_age: the per-age series to draw (a name in ``counts`` or ``flows``); ``None``
            (default) picks ``"infections_by_age"`` or the first per-age count when the run
            has one; ``False`` draws no age panel.
        age_labels: names of the age groups (default: the eight groups of
            :data:`~lpm_graph.protocols.AGE_GROUPS` when there are eight, else ``0, 1, ...``).
        time_unit: the unit of ``dt``, for the x-axis label (default ``"day"``).
        yscale: ``"linear"`` (default) or ``"log"`` (a log scale shows small compartments next
            to a large susceptible one; zeros are not drawn).
        title: the figure title (default: "Epidemic curves" and the number of replicates).
        path: save the figure there (PNG, PDF, SVG, ... from the suffix).

    Returns:
        The figure.
    """
    plt = _pyplot("plot_epidemic")
    grouped = _grouped(trajectory)
    names = list(compartments) if compartments is not None else None
    if names is None:
        names = [c for c in trajectory.counts if c not in grouped]
    _check_names(names, trajectory.counts, "compartments", "counts")
    if flows is True:
        flow_names = [f for f in trajectory.flows if f not in grouped]
    elif flows is False:
        flow_names = []
    else:
        flow_names = list(flows)
        _check_names(flow_names, trajectory.flows, "flows", "flows")
    age_series = _age_series(trajectory, grouped, by_age)

    panels = 1 + bool(flow_names) + (age_series is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), constrained_layout=True)
    axes = np.atleast_1d(axes)
    times = trajectory.times.numpy()
    xlabel = f"time ({time_unit}s)"
    log = yscale == "log"

    ax = axes[0]
    colours = _palette(names)
    for name in names:
        _draw(ax, times, _numpy(trajectory.counts[name]), name, colours[name], log)
    ax.set(xlabel=xlabel, ylabel="agents", title="Agents by compartment", yscale=yscale)
    ax.legend(title="compartment", fontsize="small")
    _thousands(ax)
    k = 1
    if flow_names:
        ax = axes[k]
        # a flow takes the colour of the compartment it fills; a repeated colour is dashed
        spare = _palette([*names, *flow_names])
        used: set[Any] = set()
        for name in flow_names:
            colour = colours.get(_flow_target(name, names) or "") or spare[name]
            _draw(ax, times[1:], _numpy(trajectory.flows[name]), name, colour, log)
            if colour in used:
                ax.get_lines()[-1].set_linestyle("--")
            used.add(colour)
        per = f"per {trajectory.dt:g} {time_unit}" if trajectory.dt != 1 else f"per {time_unit}"
        ax.set(xlabel=xlabel, ylabel=f"agents {per}", title="New per step", yscale=yscale)
        ax.legend(title="flow", fontsize="small")
        _thousands(ax)
        k += 1
    if age_series is not None:
        _draw_by_age(axes[k], trajectory, age_series, age_labels, times, xlabel)

    reps = trajectory.replicates or 1
    default = "Epidemic curves" + (
        f" (median and 5-95% band of {reps} replicates)" if reps > 1 else ""
    )
    fig.suptitle(title if title is not None else default)
    return _finish(fig, path)


def _check_names(names: Sequence[str], table: Mapping[str, Tensor], arg: str, what: str) -> None:
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"{arg} names {unknown}, which the run has no {what} of: {list(table)}.")


def _age_series(trajectory: Trajectory, grouped: set[str], by_age: str | bool | None) -> str | None:
    if by_age is False:
        return None
    if isinstance(by_age, str):
        if by_age not in grouped:
            raise ValueError(
                f"by_age={by_age!r} is not a per-group series of this run; it has "
                f"{sorted(grouped) or 'none (run SEIRM with by_age=True)'}."
            )
        return by_age
    if "infections_by_age" in grouped:
        return "infections_by_age"
    counts = [c for c in trajectory.counts if c in grouped]
    if counts:
        return counts[0]
    if by_age is True:
        raise ValueError("by_age=True but the run recorded no per-age series (by_age=True).")
    return None


def _draw_by_age(
    ax: Axes,
    trajectory: Trajectory,
    name: str,
    labels: Sequence[str] | None,
    times: np.ndarray,
    xlabel: str,
) -> None:
    is_flow = name in trajectory.flows
    values = _numpy(trajectory.flows[name] if is_flow else trajectory.counts[name])
    groups = values.shape[1]
    if labels is None:
        from .protocols.seirm import AGE_GROUPS

        labels = AGE_GROUPS if groups == len(AGE_GROUPS) else [str(g) for g in range(groups)]
    if len(labels) != groups:
        raise ValueError(f"age_labels has {len(labels)} names for {groups} groups.")
    base = name.removesuffix("_by_age")
    if is_flow:
        values = np.cumsum(values, axis=0)
        x, ylabel, panel = times[1:], f"cumulative {base}", f"Cumulative {base} by age group"
        sizes = _group_sizes(trajectory)
        if sizes is not None:
            values = 1000 * values / np.maximum(sizes, 1e-12)
            ylabel = f"cumulative {base} per 1,000 in age group"
    else:
        x, ylabel, panel = times, f"{base} (agents)", f"{base} by age group"
    cmap = _colormap("viridis")
    for g in range(groups):
        _draw(ax, x, values[:, g], labels[g], cmap(g / max(groups - 1, 1)))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=panel)
    ax.legend(title="age group", fontsize="small", ncol=2)


def _group_sizes(trajectory: Trajectory) -> np.ndarray | None:
    """Agents per group ``[G]`` (``[G, R]``): the ``*_by_age`` counts at ``t = 0`` summed over
    the compartments, when every compartment has one."""
    grouped = _grouped(trajectory)
    plain = [c for c in trajectory.counts if c not in grouped]
    if not plain or any(f"{c}_by_age" not in trajectory.counts for c in plain):
        return None
    return sum(_numpy(trajectory.counts[f"{c}_by_age"][0]) for c in plain)


def plot_supply_chain(
    trajectory: Trajectory,
    *,
    series: str = "shortage",
    sector_names: Sequence[str] | None = None,
    relative: bool = True,
    max_lines: int = 10,
    time_unit: str = "day",
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """A supply-chain run over time: a map of ``series`` by sector (a heatmap, sectors by
    steps) above one line per sector.

    Args:
        trajectory: a :class:`~lpm_graph.protocols.SupplyChain` run (flows ``[T, K]`` by
            sector; ``"shortage_by_firm"`` / ``"output_by_firm"`` ``[T, N]`` with
            ``by_firm=True`` map firms instead).
        series: the flow or count to draw (default ``"shortage"``, demand not met).
        sector_names: the ``K`` row names, e.g. the protocol's ``chain.sector_names``
            (default: numbered rows).
        relative: draw a per-sector flow as a percentage of that sector's demand in the same
            step (default; a step with no demand counts as 0 %).
        max_lines: the line panel draws the ``max_lines`` rows with the largest total (all
            rows are on the map).
        time_unit: the unit of ``dt`` for the x-axis label.
        title: the figure title (default: the series' name).
        path: save the figure there.

    Returns:
        The figure.
    """
    plt = _pyplot("plot_supply_chain")
    if series in trajectory.flows:
        values, is_flow = _numpy(trajectory.flows[series]), True
    elif series in trajectory.counts:
        values, is_flow = _numpy(trajectory.counts[series]), False
    else:
        raise ValueError(
            f"series={series!r} is not in this run; flows: {list(trajectory.flows)}, counts: "
            f"{list(trajectory.counts)}."
        )
    if values.ndim != 2:
        raise ValueError(
            f"{series!r} has shape {list(values.shape)}; plot_supply_chain draws [T, K] series "
            "(one column per sector or firm)."
        )
    rows = values.shape[1]
    by_firm = series.endswith("_by_firm")
    kind = "firm" if by_firm else "sector"
    if sector_names is None or by_firm:
        names = [f"{kind} {k}" for k in range(rows)]
    else:
        names = [str(s) for s in sector_names]
        if len(names) != rows:
            raise ValueError(f"sector_names has {len(names)} names for {rows} sectors.")
    unit = "units per step" if is_flow else "units"
    label = f"{series.replace('_', ' ')} ({unit})"
    demand = trajectory.flows.get("demand")
    if relative and is_flow and demand is not None and tuple(demand.shape) == values.shape:
        d = _numpy(demand)
        values = np.where(d > 0, 100 * values / np.where(d > 0, d, 1), 0.0)
        label = f"{series.replace('_', ' ')} (% of demand)"
    dt = trajectory.dt
    steps = values.shape[0]
    # flows of step k are drawn at its end, (k + 1) dt; counts at k dt
    x = (np.arange(steps) + is_flow) * dt
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(9, 7),
        sharex=True,
        constrained_layout=True,
        gridspec_kw={"height_ratios": (1.2, 1)},
    )
    image = top.imshow(
        values.T,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap="Reds",
        extent=(x[0] - dt / 2, x[-1] + dt / 2, -0.5, rows - 0.5),
    )
    if rows <= 30:
        top.set_yticks(range(rows), names)
    top.set(xlabel=f"time ({time_unit}s)", ylabel=kind, title=f"map: {kind} by time")
    top.tick_params(labelbottom=True)
    fig.colorbar(image, ax=top, label=label)
    order = np.argsort(-np.nansum(values, axis=0), kind="stable")[:max_lines]
    for k in sorted(order):
        bottom.plot(x, values[:, k], label=names[k])
    shown = "" if rows <= max_lines else f" ({max_lines} largest of {rows})"
    bottom.set(xlabel=f"time ({time_unit}s)", ylabel=label, title=f"lines: per {kind}{shown}")
    bottom.legend(title=kind, fontsize="small", ncol=2 if len(order) > 5 else 1)
    fig.suptitle(title if title is not None else f"Supply chain: {series.replace('_', ' ')}")
    return _finish(fig, path)


def plot_network(
    graph: PopulationGraph,
    state: Tensor | Mapping[str, Tensor] | str | None = None,
    *,
    node_type: str | None = None,
    relations: Sequence[str] | None = None,
    labels: Sequence[str] | Mapping[int, str] | None = None,
    state_label: str | None = None,
    layout: str | Tensor = "spring",
    max_nodes: int = NETWORK_MAX_NODES,
    seed: int = 0,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """A small population graph: agents placed by a layout, coloured by state or attribute.

    Edges are drawn as lines (their direction is not shown), one colour per relation. Node
    colours come from ``state``:

    * ``None``: one colour;
    * a per-agent tensor ``[N]``: integers or booleans are categories (a legend, names from
      ``labels``), floats are values (a colorbar, named ``state_label``);
    * the name of a node attribute (``"age_group"``: labelled with the age groups);
    * a mapping from compartment name to per-agent indicator, e.g. a run's ``final_state``
      (``{"S": [N], "I": [N], "R": [N]}``; stage-split ``[N, K]`` tensors are summed over
      ``K``): each agent takes the compartment of its largest value. Use one run (pick a
      replicate column first).

    Args:
        graph: the graph (at most ``max_nodes`` agents of ``node_type``).
        state: the node colours (see above).
        node_type: the node type drawn (default: the only one).
        relations: edge-type names to draw (default: every relation within ``node_type``).
        labels: category names, by position or ``{value: name}``.
        state_label: the colorbar label of float values (default ``"value"``).
        layout: ``"spring"`` (default, seeded), ``"kamada_kawai"``, ``"circular"``, or
            positions ``[N, 2]``.
        max_nodes: refuse larger graphs (default :data:`NETWORK_MAX_NODES`).
        seed: the spring layout's seed.
        title: the axes title (default: agents and contacts).
        path: save the figure there.

    Returns:
        The figure.

    Raises:
        ValueError: a graph above ``max_nodes`` agents, a ``state`` of the wrong length, an
            unknown attribute or relation.
    """
    plt = _pyplot("plot_network")
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    node_type = graph._node_type(node_type)
    n = graph.num_nodes(node_type)
    if n > max_nodes:
        raise ValueError(
            f"plot_network draws graphs of at most {max_nodes:,} nodes (a larger drawing is "
            f"unreadable and its layout slow); this one has {n:,} {node_type!r} nodes. Draw a "
            "subgraph, or pass max_nodes= to raise the limit."
        )
    rels = [r for r in graph.relations if r[0] == node_type and r[2] == node_type]
    if relations is not None:
        rels = [graph.relation(name) for name in relations]
    pairs = {}
    for rel in rels:
        ei = graph.edge_index(rel).cpu()
        ei = ei[:, ei[0] != ei[1]]  # self-contacts are not drawn
        pairs[rel] = np.unique(np.sort(ei.numpy().T, axis=1), axis=0)  # [E', 2], one per pair
    if isinstance(layout, str):
        pos = _layout(n, pairs.values(), layout, seed)
    else:
        pos = _numpy(layout)
        if pos.shape != (n, 2):
            raise ValueError(f"layout positions must be [{n}, 2], got {list(pos.shape)}.")

    fig, ax = plt.subplots(figsize=(8.5, 6.5), constrained_layout=True)
    edge_handles = []
    edge_colours = _colormap("Set2")
    for k, (rel, p) in enumerate(pairs.items()):
        colour = "0.55" if len(pairs) == 1 else edge_colours(k % edge_colours.N)
        segments = np.stack([pos[p[:, 0]], pos[p[:, 1]]], axis=1)  # [E', 2, 2]
        ax.add_collection(LineCollection(segments, colors=[colour], linewidths=0.9, alpha=0.7))
        edge_handles.append(Line2D([], [], color=colour, lw=2, label=f"{rel[1]} ({len(p):,})"))
    size = float(np.clip(3000 / max(n, 1), 8, 80))
    values, categories, name = _node_values(graph, node_type, state, labels, n)
    node_handles = []
    if values is None:
        ax.scatter(pos[:, 0], pos[:, 1], s=size, color="tab:blue", zorder=2)
        node_handles.append(Line2D([], [], marker="o", ls="", color="tab:blue", label=node_type))
    elif categories is not None:
        cmap = _colormap("tab10" if len(categories) <= 10 else "tab20")
        for k, (value, label) in enumerate(categories.items()):
            colour = _COLOURS.get(label, cmap(k % cmap.N))
            mask = values == value
            ax.scatter(pos[mask, 0], pos[mask, 1], s=size, color=colour, zorder=2)
            count = int(mask.sum())
            node_handles.append(
                Line2D([], [], marker="o", ls="", color=colour, label=f"{label} ({count})")
            )
    else:
        points = ax.scatter(pos[:, 0], pos[:, 1], s=size, c=values, cmap="viridis", zorder=2)
        fig.colorbar(points, ax=ax, label=state_label or name or "value")
    outside = {"fontsize": "small", "bbox_to_anchor": (1.02, 1), "borderaxespad": 0}
    if node_handles:
        heading = name.replace("_", " ") if name else None
        nodes = ax.legend(handles=node_handles, title=heading, loc="upper left", **outside)
        ax.add_artist(nodes)
    if edge_handles:
        outside["bbox_to_anchor"] = (1.02, 0)
        ax.legend(handles=edge_handles, title="contacts", loc="lower left", **outside)
    where = layout if isinstance(layout, str) else "given"
    ax.set(xlabel=f"{where} layout x", ylabel=f"{where} layout y")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    contacts = sum(len(p) for p in pairs.values())
    ax.set_title(title if title is not None else f"{n:,} {node_type}s, {contacts:,} contacts")
    return _finish(fig, path)


def _layout(n: int, pairs: Any, layout: str, seed: int) -> np.ndarray:
    """Node positions ``[N, 2]`` from a networkx layout of the contacts (one edge per pair)."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for p in pairs:
        graph.add_edges_from(p.tolist(), weight=1.0)
    if layout == "spring":
        # A weak spring from every node to a hub keeps isolated agents and small components
        # near the rest instead of pushing them to the edge of the picture.
        hub = n
        graph.add_edges_from(((hub, i) for i in range(n)), weight=0.3)
        placed = nx.spring_layout(graph, seed=seed, weight="weight")
    elif layout == "kamada_kawai":
        placed = nx.kamada_kawai_layout(graph)
    elif layout == "circular":
        placed = nx.circular_layout(graph)
    else:
        raise ValueError(
            f"layout={layout!r}; choose 'spring', 'kamada_kawai', 'circular' or [N, 2] positions."
        )
    return np.array([placed[i] for i in range(n)], dtype=np.float64).reshape(n, 2)


def _node_values(
    graph: PopulationGraph,
    node_type: str,
    state: Tensor | Mapping[str, Tensor] | str | None,
    labels: Sequence[str] | Mapping[int, str] | None,
    n: int,
) -> tuple[np.ndarray | None, dict[Any, str] | None, str | None]:
    """Per-node values, their categories (``{value: label}``, ``None`` for continuous values)
    and the legend title."""
    if state is None:
        return None, None, None
    name = None
    if isinstance(state, str):
        attrs = graph.node_attrs(node_type)
        if state not in attrs:
            raise ValueError(f"{node_type!r} nodes have no attribute {state!r}: {list(attrs)}.")
        name, state = state, attrs[state]
        if name == "age_group" and labels is None:
            from .protocols.seirm import AGE_GROUPS

            labels = AGE_GROUPS
    if isinstance(state, Mapping):
        names = list(state)
        stacked = []
        for key in names:
            v = torch.as_tensor(state[key]).detach().to(torch.float64).cpu()
            if v.shape[0] != n:
                raise ValueError(f"state[{key!r}] has {v.shape[0]} rows for {n} nodes.")
            stacked.append(v.reshape(n, -1).sum(1))
        values = torch.stack(stacked, 1).argmax(1).numpy()
        present = sorted(set(values.tolist()))
        return values, {k: names[k] for k in present}, "compartment"
    tensor = torch.as_tensor(state).detach().cpu()
    if tensor.shape != (n,):
        raise ValueError(f"state must be one value per node, [{n}], got {list(tensor.shape)}.")
    if tensor.is_floating_point():
        return tensor.to(torch.float64).numpy(), None, name
    values = tensor.long().numpy()
    categories = {}
    for v in sorted(set(values.tolist())):
        if labels is None:
            categories[v] = str(v)
        elif isinstance(labels, Mapping):
            categories[v] = str(labels.get(v, v))
        else:
            categories[v] = str(labels[v]) if 0 <= v < len(labels) else str(v)
    return values, categories, name
