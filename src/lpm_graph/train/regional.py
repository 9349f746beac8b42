"""Several regions in one run: one graph of disjoint regional populations, SEIRM with a
reproduction number and a mortality per region, flows reported per region, a batched
well-mixed SEIRM ODE, and the calibration network that drives them from each region's
signals.

Forecasting a state's counties is the typical use: one simulation steps every county at
once, so the cost per step is that of one larger graph, not one run per county.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from .._checks import check_int
from ..graph import PopulationGraph
from ..protocols import SEIRM
from ..protocols.base import State, StepContext
from .baselines import _rk4
from .calibnn import _start_at

__all__ = ["RegionalCalibNN", "RegionalODE", "RegionalSEIRM", "disjoint_union"]

REGION = "region"


def disjoint_union(graphs: Sequence[PopulationGraph], attr: str = REGION) -> PopulationGraph:
    """One graph holding ``graphs`` side by side (no edge between them); node attribute
    ``attr`` gives each agent's region, the index of its graph.

    Every graph must have the same node types and relations (e.g. several
    :class:`~lpm_graph.datasets.SyntheticPopulation` graphs) and a single node type.
    """
    if not graphs:
        raise ValueError("graphs is empty; give one PopulationGraph per region.")
    first = graphs[0]
    if len(first.node_types) != 1:
        raise ValueError(
            f"disjoint_union takes graphs of one node type, got {first.node_types}; "
            "join heterogeneous node types by hand."
        )
    (node_type,) = first.node_types
    for k, g in enumerate(graphs):
        if not isinstance(g, PopulationGraph):
            raise ValueError(f"graphs[{k}] is a {type(g).__name__}, not a PopulationGraph.")
        if g.node_types != first.node_types or g.relations != first.relations:
            raise ValueError(
                f"graphs[{k}] has node types {g.node_types} and relations {g.relations}; "
                f"graphs[0] has {first.node_types} and {first.relations}: they must match."
            )
        if attr in g.node_attrs(node_type):
            raise ValueError(
                f"graphs[{k}] already has a node attribute {attr!r}; pick another attr."
            )
    sizes = [g.num_nodes(node_type) for g in graphs]
    offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0).tolist()
    data = HeteroData()
    data[node_type].num_nodes = sum(sizes)
    for name in first.node_attrs(node_type):
        data[node_type][name] = torch.cat([g.node_attrs(node_type)[name] for g in graphs])
    data[node_type][attr] = torch.cat(
        [torch.full((n,), k, dtype=torch.long) for k, n in enumerate(sizes)]
    )
    for rel in first.relations:
        store = data[rel]
        store.edge_index = torch.cat(
            [g.edge_index(rel) + off for g, off in zip(graphs, offsets)], dim=1
        )
        weights = [g.edge_weight(rel) for g in graphs]
        if any(w is not None for w in weights):
            store.edge_weight = torch.cat(
                [
                    w if w is not None else torch.ones(g.num_edges(rel))
                    for g, w in zip(graphs, weights)
                ]
            )
        if getattr(first.data[rel], "undirected", False):
            store.undirected = True
    return PopulationGraph(data)


class RegionalSEIRM(SEIRM):
    """SEIRM whose agents belong to regions, each with its own reproduction number and
    mortality; flows are reported per region.

    Each agent's infection hazard uses its region's ``reproduction_number`` (``[T, C]``, one
    value per step and region, or ``[C]``), and on leaving I it dies with probability
    ``mortality[region] * age_mortality[age group]`` (``age_mortality`` defaults to ones:
    one mortality per region). ``total_flows`` sums every flow per region, so a run's
    ``trajectory.flows[name]`` is ``[T, C]``. Contacts never cross regions in a
    :func:`disjoint_union` graph, and the contact normalisation (mean contacts per age
    group) is taken over the whole graph, which is the same in each region when the
    regions are drawn from one generator.

    Args:
        regions: ``[N]`` region index of every agent (``graph.node_attrs()["region"]``).
        reproduction_number: ``[C]`` or ``[T, C]`` (set by the calibration at each call).
        mortality: ``[C]`` probability of death on leaving I per region.
        **kwargs: the other arguments of :class:`~lpm_graph.protocols.SEIRM`.
    """

    def __init__(
        self,
        regions: Tensor,
        reproduction_number: float | Tensor = 2.5,
        mortality: float | Tensor = 0.01,
        **kwargs: object,
    ) -> None:
        regions = torch.as_tensor(regions)
        if regions.dim() != 1 or regions.dtype in (torch.bool,) or regions.is_floating_point():
            raise ValueError(
                f"regions must be a [N] integer tensor of region indices, got dtype "
                f"{regions.dtype} and shape {list(regions.shape)}."
            )
        if regions.numel() == 0 or int(regions.min()) < 0:
            raise ValueError("regions must be non-empty, with indices 0 .. C-1.")
        count = int(regions.max()) + 1
        r = torch.as_tensor(reproduction_number, dtype=torch.get_default_dtype())
        m = torch.as_tensor(mortality, dtype=torch.get_default_dtype())
        super().__init__(reproduction_number=2.5, mortality=1.0, **kwargs)  # type: ignore[arg-type]
        self.num_regions = count
        self.register_buffer("regions", regions.long(), persistent=False)
        self.regional_reproduction_number = r.expand(count).clone() if r.dim() == 0 else r
        self.regional_mortality = m.expand(count).clone() if m.dim() == 0 else m

    def check(self, graph: PopulationGraph) -> None:
        super().check(graph)
        n = graph.num_nodes(self.node_type)
        if self.regions.numel() != n:
            raise ValueError(
                f"regions has {self.regions.numel()} entries but the graph has {n} agents; "
                "build RegionalSEIRM with the graph's own region attribute."
            )
        r, m, c = self.regional_reproduction_number, self.regional_mortality, self.num_regions
        if r.shape[-1] != c or r.dim() > 2:
            raise ValueError(
                f"reproduction_number must be [C] or [T, C] with C = {c} regions, got "
                f"{list(r.shape)}."
            )
        if m.shape != (c,):
            raise ValueError(f"mortality must be [C] with C = {c} regions, got {list(m.shape)}.")
        if bool((r < 0).any()) or not bool(torch.isfinite(r).all()):
            raise ValueError("reproduction_number must be finite and non-negative.")
        if bool(((m < 0) | (m > 1)).any()):
            raise ValueError("mortality must be a probability in [0, 1] per region.")

    def reproduction_number_at(self, t: int) -> Tensor:
        r = self.regional_reproduction_number
        if r.dim() == 2:
            r = r[min(t, r.shape[0] - 1)]
        return r[self.regions]

    def intervention_factor(self, hook: str, state: State, ctx: StepContext) -> Tensor | None:
        out = super().intervention_factor(hook, state, ctx)
        if hook != "mortality_factor":
            return out
        m = self.regional_mortality[self.regions]
        if out is not None:
            m = m * out
        first = next(iter(state.values()))
        return m.reshape(-1, *([1] * (first.dim() - 1))) if first.dim() > 1 else m

    def total_flows(self, flows: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for name, value in flows.items():
            if value.shape[0] != self.regions.numel():
                out[name] = value.sum(0)
                continue
            total = value.new_zeros((self.num_regions, *value.shape[1:]))
            out[name] = total.index_add(0, self.regions, value)
        return out


class RegionalODE(nn.Module):
    """The well-mixed SEIRM ODE of :class:`~lpm_graph.train.SEIRMODE` for ``C`` regions at
    once (vectorised over regions), with classical RK4 and ``R`` held within each day.

    ``forward(r, m, i0)`` takes ``r: [T, C]`` (or ``[C]``), ``m: [C]``, ``i0: [C]`` (initial
    fraction in E) and returns the daily flows ``{"infections", "onsets", "deaths"}`` as
    ``[T, C]`` counts (fractions times ``populations``).
    """

    def __init__(
        self,
        populations: Tensor | Sequence[float],
        steps: int,
        *,
        exposed_days: float = 3.0,
        infectious_days: float = 5.0,
        substeps: int = 1,
    ) -> None:
        super().__init__()
        check_int(steps, "steps", 1)
        check_int(substeps, "substeps", 1)
        pops = torch.as_tensor(populations, dtype=torch.get_default_dtype())
        if pops.dim() != 1 or not bool((pops > 0).all()):
            raise ValueError(f"populations must be [C] positive numbers, got {pops.tolist()}.")
        for name, days in (("exposed_days", exposed_days), ("infectious_days", infectious_days)):
            if not (math.isfinite(days) and days > 0):
                raise ValueError(f"{name} must be a finite positive number, got {days!r}.")
        self.register_buffer("populations", pops)
        self.steps = steps
        self.sigma, self.gamma, self.substeps = 1 / exposed_days, 1 / infectious_days, substeps

    def forward(self, r: Tensor, m: Tensor, i0: Tensor) -> dict[str, Tensor]:
        if r.dim() == 1:
            r = r.expand(self.steps, -1)
        betas = [r[min(t, r.shape[0] - 1)] * self.gamma for t in range(self.steps)]
        path = _rk4(betas, i0, torch.zeros_like(i0), self.sigma, self.gamma, self.substeps)
        s, _, _, exits, onsets = (torch.stack(v) for v in zip(*path))  # [T + 1, C]
        pop = self.populations.to(s)
        return {
            "infections": (s[:-1] - s[1:]) * pop,
            "onsets": (onsets[1:] - onsets[:-1]) * pop,
            "deaths": m * (exits[1:] - exits[:-1]) * pop,
        }


class RegionalCalibNN(nn.Module):
    r"""One calibration network for several regions: each region's daily signals drive its
    weekly parameters.

    A GRU reads each region's standardised signals (with a missing-value indicator per
    column) day by day; its state at the end of week ``w``, joined to a learned embedding of
    the region, gives that week's time-varying parameters through an MLP squashed into
    their bounds; static parameters come from the region embedding and the last state.
    The parameters of week ``w`` depend on signals up to week ``w`` only (causal), and
    weeks past the signals hold the last value: a forecast continues the last week.

    Args:
        features: ``[C, D, F]`` daily signals per region (NaN: missing).
        bounds: ``{name: (low, high)}`` of every parameter.
        time_varying: names returned per step ``[steps, C]``; the others ``[C]``.
        steps: steps to expand the weekly values to.
        hidden: width of the GRU state and the embeddings.
        start: optional ``{name: value}`` inside the bounds that the untrained network gives
            (default: the middle of each bound).
        seed: seed of the initial weights (the global RNG is untouched).
    """

    def __init__(
        self,
        features: Tensor,
        bounds: Mapping[str, tuple[float, float]],
        *,
        time_varying: Sequence[str] = ("reproduction_number",),
        steps: int,
        hidden: int = 16,
        start: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        features = torch.as_tensor(features, dtype=torch.get_default_dtype())
        if features.dim() != 3 or features.shape[1] < 7:
            raise ValueError(
                f"features must be [regions, days, signals] with at least 7 days, got "
                f"{list(features.shape)}."
            )
        check_int(steps, "steps", 1)
        for name, (low, high) in bounds.items():
            if not low < high:
                raise ValueError(f"bounds of {name!r} need low < high, got {(low, high)}.")
        unknown = sorted(set(time_varying) - set(bounds))
        if unknown:
            raise ValueError(f"time_varying names {unknown}, which have no bounds; add them.")
        seen = torch.isfinite(features)
        mean = torch.nanmean(features, 1, keepdim=True).nan_to_num(0.0)
        std = torch.sqrt(torch.nanmean((features - mean) ** 2, 1, keepdim=True)).nan_to_num(1.0)
        x = torch.where(seen, (features - mean) / std.clamp_min(1e-8), torch.zeros_like(features))
        self.register_buffer("x", torch.cat([x, seen.to(x.dtype)], dim=2))  # [C, D, 2F]
        regions, days = features.shape[0], features.shape[1]
        self.weeks = days // 7
        self.steps = steps
        self.names = list(bounds)
        self.time_varying = [n for n in self.names if n in set(time_varying)]
        self.static = [n for n in self.names if n not in set(time_varying)]
        self.register_buffer("low", torch.tensor([bounds[n][0] for n in self.names]))
        self.register_buffer("high", torch.tensor([bounds[n][1] for n in self.names]))
        index = torch.clamp(torch.arange(steps) // 7, max=self.weeks - 1)
        self.register_buffer("index", index, persistent=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.GRU(self.x.shape[2], hidden, batch_first=True)
            self.region = nn.Embedding(regions, hidden)
            nn.init.normal_(self.region.weight, std=0.1)
            self.decoder = nn.Sequential(
                nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, len(self.names))
            )
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)
        _start_at(self.decoder[-1].bias, self.names, bounds, start)
        self.to(self.x.dtype)

    def weekly(self) -> dict[str, Tensor]:
        """Every parameter per week and region, ``{name: [weeks, C]}``."""
        states, _ = self.encoder(self.x)  # [C, D, H]
        ends = states[:, 6 : 7 * self.weeks : 7]  # [C, W, H]: the state at each week's end
        emb = self.region.weight.unsqueeze(1).expand(-1, ends.shape[1], -1)
        z = self.decoder(torch.cat([ends, emb], dim=2))  # [C, W, P]
        values = self.low + (self.high - self.low) * torch.sigmoid(z)
        return {name: values[..., k].T for k, name in enumerate(self.names)}

    def forward(self, weekly: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The parameters per step (``[steps, C]``) or per region (``[C]``), from ``weekly``
        when the caller has already computed :meth:`weekly` (e.g. for a penalty on it)."""
        weekly = self.weekly() if weekly is None else weekly
        out = {name: weekly[name][self.index] for name in self.time_varying}
        out.update({name: weekly[name][-1] for name in self.static})
        return out
