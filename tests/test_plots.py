"""lpm_graph.plot: every figure has labelled axes, a legend or colorbar and a title, and draws
the numbers of the run (not only something).

(Named test_plots.py: tests/train/test_plot.py already holds the module name test_plot.)
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import SyntheticPopulation, erdos_renyi
from lpm_graph.protocols import (
    AGE_GROUPS,
    SEIRM,
    SIR,
    CapacityShock,
    SupplyChain,
    firm_network,
    sector_values,
    steady_output,
)

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lpm_graph import plot  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def seirm_run():
    graph = SyntheticPopulation(300, seed=0)[0]
    with torch.no_grad():
        return simulate(
            SEIRM(3.0, 0.05, by_age=True), graph, 30, initial_infected=10, seed=0, replicates=3
        )


@pytest.fixture(scope="module")
def sir_run():
    with torch.no_grad():
        return simulate(SIR(0.2, 0.2), erdos_renyi(200, 6), 25, initial_infected=5, seed=1)


@pytest.fixture(scope="module")
def chain_run():
    names = ("raw", "parts", "retail")
    graph = firm_network(
        [3, 3, 3], [[0, 0.5, 0], [0, 0, 0.5], [0, 0, 0]], sector_names=names, seed=0
    )
    demand = sector_values(graph, {"retail": 1.0}).double()
    shock = CapacityShock(0.5, sector="raw", start=5, end=15)
    chain = SupplyChain(1.2 * steady_output(graph, demand), demand, shocks=[shock])
    with torch.no_grad():
        return simulate(chain, graph, 30, dtype=torch.float64), chain.sector_names


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def _legend_texts(ax):
    legends = [ax.get_legend(), *(a for a in ax.artists if hasattr(a, "get_texts"))]
    return [t.get_text() for legend in legends if legend for t in legend.get_texts()]


def test_epidemic_curves_by_compartment_flow_and_age(seirm_run, tmp_path):
    path = tmp_path / "sub" / "epidemic.png"
    fig = plot.plot_epidemic(seirm_run, path=path)
    assert path.read_bytes()[:8] == PNG
    counts, flows, ages = fig.axes
    for ax in fig.axes:
        assert ax.get_xlabel() == "time (days)" and ax.get_ylabel() and ax.get_title()
        assert ax.get_legend() is not None
    assert "3 replicates" in fig.get_suptitle()
    assert counts.get_ylabel() == "agents" and flows.get_ylabel() == "agents per day"
    assert _legend_texts(counts) == list("SEIRM")
    assert _legend_texts(flows) == ["infections", "onsets", "recoveries", "deaths"]
    assert _legend_texts(ages) == list(AGE_GROUPS)

    # the compartment line is the median over the replicates, with one band per line
    s = seirm_run.counts["S"].double().numpy()
    np.testing.assert_allclose(_lines(counts)["S"].get_ydata(), np.median(s, axis=1))
    assert len(counts.collections) == 5
    # the age panel: cumulative infections per 1,000 agents of the group (attack rate)
    infections = seirm_run.flows["infections_by_age"].double().numpy()  # [T, 8, R]
    size = sum(seirm_run.counts[f"{c}_by_age"][0].double().numpy() for c in "SEIRM")  # [8, R]
    rate = 1000 * infections.cumsum(0) / size
    assert "per 1,000" in ages.get_ylabel()
    for g, label in enumerate(AGE_GROUPS):
        np.testing.assert_allclose(_lines(ages)[label].get_ydata(), np.median(rate[:, g], 1))


def test_epidemic_options(sir_run):
    fig = plot.plot_epidemic(sir_run, flows=False, title="one panel")
    (ax,) = fig.axes
    assert fig.get_suptitle() == "one panel"
    assert _legend_texts(ax) == ["S", "I", "R"]
    np.testing.assert_array_equal(_lines(ax)["I"].get_ydata(), sir_run.counts["I"].numpy())
    assert not ax.collections  # no replicates, no band

    fig = plot.plot_epidemic(sir_run, compartments=["I"], flows=["infections"], yscale="log")
    counts, flows = fig.axes
    assert counts.get_yscale() == "log" and _legend_texts(flows) == ["infections"]
    drawn = _lines(flows)["infections"].get_ydata()
    zero = sir_run.flows["infections"].numpy() == 0
    assert zero.any() and np.isnan(drawn[zero]).all()  # a log axis leaves zeros out

    with pytest.raises(ValueError, match="which the run has no counts of"):
        plot.plot_epidemic(sir_run, compartments=["X"])
    with pytest.raises(ValueError, match="no per-age series"):
        plot.plot_epidemic(sir_run, by_age=True)


def test_epidemic_by_age_of_a_count(seirm_run):
    fig = plot.plot_epidemic(seirm_run, flows=False, by_age="I_by_age", age_labels="abcdefgh")
    _, ages = fig.axes
    assert ages.get_ylabel() == "I (agents)" and _legend_texts(ages) == list("abcdefgh")
    i = seirm_run.counts["I_by_age"].double().numpy()
    np.testing.assert_allclose(_lines(ages)["c"].get_ydata(), np.median(i[:, 2], axis=1))
    with pytest.raises(ValueError, match="not a per-group series"):
        plot.plot_epidemic(seirm_run, by_age="I")
    assert len(plot.plot_epidemic(seirm_run, by_age=False).axes) == 2


def test_supply_chain_map_and_lines(chain_run, tmp_path):
    traj, names = chain_run
    fig = plot.plot_supply_chain(traj, sector_names=names, path=tmp_path / "chain.png")
    assert (tmp_path / "chain.png").read_bytes()[:8] == PNG
    top, bottom, colorbar = fig.axes
    assert top.get_xlabel() == bottom.get_xlabel() == "time (days)"
    assert top.get_ylabel() == "sector" and top.get_title() and bottom.get_title()
    assert colorbar.get_ylabel() == "shortage (% of demand)" == bottom.get_ylabel()
    assert [t.get_text() for t in top.get_yticklabels()] == list(names)
    assert _legend_texts(bottom) == list(names)
    shortage = traj.flows["shortage"].numpy()
    demand = traj.flows["demand"].numpy()
    percent = 100 * shortage / demand
    assert percent.max() > 1  # the shock leaves demand unmet
    (image,) = top.get_images()
    np.testing.assert_allclose(image.get_array(), percent.T)
    np.testing.assert_allclose(_lines(bottom)["raw"].get_ydata(), percent[:, 0])
    np.testing.assert_allclose(_lines(bottom)["raw"].get_xdata(), np.arange(1, 31))

    fig = plot.plot_supply_chain(traj, series="inventory", relative=False)
    top, bottom, colorbar = fig.axes
    assert colorbar.get_ylabel() == "inventory (units)"
    assert _legend_texts(bottom) == ["sector 0", "sector 1", "sector 2"]
    with pytest.raises(ValueError, match="not in this run"):
        plot.plot_supply_chain(traj, series="backlog")
    with pytest.raises(ValueError, match="2 names for 3 sectors"):
        plot.plot_supply_chain(traj, sector_names=["a", "b"])


def test_network_coloured_by_state(tmp_path):
    graph = SyntheticPopulation(80, seed=2)[0]
    with torch.no_grad():
        run = simulate(SIR(0.3, 0.2), graph, 5, initial_infected=4, seed=0)
    fig = plot.plot_network(graph, run.final_state, path=tmp_path / "net.png")
    assert (tmp_path / "net.png").read_bytes()[:8] == PNG
    (ax,) = fig.axes
    assert ax.get_xlabel() == "spring layout x" and ax.get_ylabel() == "spring layout y"
    assert ax.get_title().startswith("80 agents")
    texts = _legend_texts(ax)
    states = {c: int(run.final_state[c].sum()) for c in "SIR"}
    for c, k in states.items():
        if k:
            assert f"{c} ({k})" in texts
    relations = [r[1] for r in graph.relations if graph.num_edges(r)]
    assert all(any(t.startswith(f"{r} (") for t in texts) for r in relations)
    dots = [c for c in ax.collections if c.get_offsets().shape[1] == 2 and len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in dots) >= 80


def test_network_attribute_values_and_limits():
    graph = SyntheticPopulation(60, seed=3)[0]
    fig = plot.plot_network(graph, "age_group", relations=["household"], layout="circular")
    (ax,) = fig.axes
    texts = _legend_texts(ax)
    ages = graph.node_attrs()["age_group"]
    assert f"{AGE_GROUPS[0]} ({int((ages == 0).sum())})" in texts
    assert [t for t in texts if t.startswith("household")] and not [
        t for t in texts if t.startswith("community")
    ]

    fig = plot.plot_network(graph, torch.linspace(0, 1, 60), state_label="risk")
    ax, colorbar = fig.axes
    assert colorbar.get_ylabel() == "risk"

    with pytest.raises(ValueError, match="at most 50 nodes .* this one has 60"):
        plot.plot_network(graph, max_nodes=50)
    with pytest.raises(ValueError, match="one value per node"):
        plot.plot_network(graph, torch.zeros(59))
    with pytest.raises(ValueError, match="no attribute 'income'"):
        plot.plot_network(graph, "income")
    with pytest.raises(ValueError, match="layout="):
        plot.plot_network(graph, layout="spiral")


def test_plot_forecast_is_re_exported():
    from lpm_graph.train import plot_forecast

    assert plot.plot_forecast is plot_forecast


@pytest.mark.parametrize("name", ["plot_epidemic", "plot_supply_chain", "plot_network"])
def test_missing_matplotlib_names_the_extra(name, sir_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    first = erdos_renyi(10, 2) if name == "plot_network" else sir_run
    with pytest.raises(ImportError, match=rf"{name} needs matplotlib.*lpm-graph\[plot\]"):
        getattr(plot, name)(first)
