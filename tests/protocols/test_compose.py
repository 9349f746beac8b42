"""Compose: several protocols as one model, linked through ports (issue 21, item 2)."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from lpm_graph import Compose, simulate
from lpm_graph.protocols import (
    SEIRM,
    SIR,
    BehaviourCoupling,
    LabourMarket,
    Link,
    Protection,
    SlotSum,
    ThresholdAdoption,
    epidemic_economy,
    labour_population,
)

STEPS = 8


@pytest.fixture(scope="module")
def graph():
    return labour_population(48, num_areas=2, num_occupations=2, seed=0)


def _labour(sick: float | torch.Tensor = 3.0, isolating: float | torch.Tensor = 5.0):
    return LabourMarket(
        0.01, 0.05, sick_job_loss=sick, isolation_job_loss=isolating, initial_unemployment=0.1
    )


def _model(
    reproduction_number=3.0,
    threshold=0.3,
    sharpness=10.0,
    efficacy=0.6,
    sick=3.0,
    isolating=5.0,
) -> Compose:
    return epidemic_economy(
        SEIRM(reproduction_number, 0.05),
        ThresholdAdoption(threshold, sharpness, risk_weight=4.0),
        _labour(sick, isolating),
        efficacy=efficacy,
        isolation_delay=2,
    )


# ---------------------------------------------------------------------------- gradients


@pytest.fixture
def float64():
    """Every parameter and buffer in float64 (SEIRM's float32 defaults round the forward of a
    float64 run at ~1e-7, which a finite difference of step 1e-6 turns into noise)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_gradcheck_of_unemployment_through_the_ports(graph, float64):
    """d final unemployment / d (R, threshold, sharpness, efficacy): from the labour market
    through labour.sick / labour.isolating to SEIRM, and through the epidemic's ports to the
    behaviour, in float64, expected mode."""

    def unemployment(r, threshold, sharpness, efficacy):
        model = _model(r, threshold, sharpness, efficacy)
        traj = simulate(
            model, graph, STEPS, initial_infected={"epi": 6, "behaviour": 4},
            mode="expected", dtype=torch.float64,
        )  # fmt: skip
        return traj.counts["labour.unemployed"][-1]

    inputs = tuple(
        torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (3.0, 0.3, 10.0, 0.6)
    )
    assert torch.autograd.gradcheck(unemployment, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    grads = torch.autograd.grad(unemployment(*inputs), inputs)
    assert all(float(g.abs()) > 1e-6 for g in grads), grads  # every path carries a gradient
    assert float(grads[0]) > 0  # more transmission, more sickness, more job loss


def test_job_loss_port_by_hand(graph):
    """Expected job losses of a step: sum_i E_i (1 - exp(-delta (1 + k_s s_i + k_q q_i) dt)),
    with s_i, q_i read from the epidemic after its phases of the same step."""
    model = _model(sick=3.0, isolating=5.0)
    with torch.no_grad():
        traj = simulate(
            model, graph, STEPS, initial_infected=6, mode="expected", dtype=torch.float64,
            record_states=True,
        )  # fmt: skip
    for t in (4, 6):
        start, after = traj.states[t], traj.states[t + 1]
        infectious = after["epi.I"]  # [N, K_I]
        sick, isolating = infectious.sum(1), infectious[:, 2:].sum(1)
        labour = model.protocols.labour  # the stored (float32) values: 0.01 is 0.0099999998
        delta, k_s, k_q = (
            getattr(labour, k).double()
            for k in ("job_loss_rate", "sick_job_loss", "isolation_job_loss")
        )
        hazard = delta * (1 + k_s * sick + k_q * isolating)
        want = (start["labour.employed"] * -torch.expm1(-hazard)).sum()
        assert float(sick.sum()) > 0.1
        torch.testing.assert_close(traj.flows["labour.job_losses"][t], want, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------- limiting cases


def test_coupling_through_ports_equals_behaviour_coupling(graph):
    """behaviour then epi, linked by Protection on both ends: the same model as SEIRM with a
    BehaviourCoupling (its phase first, contacts scaled by (1 - e c_j)(1 - e c_i))."""
    n = graph.num_nodes("agent")
    adopters = torch.full((n,), 0.2, dtype=torch.float64)
    infected = torch.zeros(n, dtype=torch.float64)
    infected[:5] = 1.0
    protection = Protection(0.6)
    composed = Compose(
        behaviour=ThresholdAdoption(0.3, 10.0, risk_weight=4.0),
        epi=SEIRM(3.0, 0.05),
        links={
            "behaviour.infectious": "epi.I",
            "epi.infectiousness_factor": Link("behaviour.adopted", protection),
            "epi.susceptibility_factor": ("behaviour.adopted", protection),
        },
    )
    coupled = SEIRM(
        3.0,
        0.05,
        interventions=[
            BehaviourCoupling(ThresholdAdoption(0.3, 10.0, risk_weight=4.0), 0.6, initial=adopters)
        ],
    )
    with torch.no_grad():
        a = simulate(composed, graph, 12, mode="expected", dtype=torch.float64,
                     initial_infected={"epi": infected, "behaviour": adopters})  # fmt: skip
        b = simulate(coupled, graph, 12, mode="expected", initial_infected=infected)
    for name in ("S", "E", "I", "R", "M"):
        torch.testing.assert_close(a.counts[f"epi.{name}"], b.counts[name], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(a.counts["behaviour.adopted"], b.counts["adopted"])
    assert float(a.counts["behaviour.adopted"][-1]) > float(a.counts["behaviour.adopted"][0])


@pytest.mark.parametrize("mode", ["stochastic", "expected"])
def test_no_job_loss_sensitivity_gives_the_uncoupled_labour_market(graph, mode):
    """sick_job_loss = isolation_job_loss = 0: the composed labour counts are those of the
    market run alone, in a Compose (the same 'labour/' streams) and, in expected mode (no
    draws), by itself."""
    with torch.no_grad():
        full = simulate(_model(sick=0.0, isolating=0.0), graph, STEPS, initial_infected=6,
                        mode=mode, seed=4)  # fmt: skip
        links = {"labour.sick": None, "labour.isolating": None}
        alone = simulate(Compose(labour=_labour(), links=links), graph, STEPS, mode=mode, seed=4)
        bare = simulate(_labour(), graph, STEPS, mode=mode, seed=4)
    assert float(full.counts["epi.I"].sum()) > 0
    for name in ("employed", "unemployed", "not_in_labour_force"):
        assert torch.equal(full.counts[f"labour.{name}"], alone.counts[f"labour.{name}"]), name
        if mode == "expected":
            assert torch.equal(full.counts[f"labour.{name}"], bare.counts[name]), name
    assert torch.equal(full.flows["labour.claims"], alone.flows["labour.claims"])


def test_sickness_and_isolation_cost_jobs(graph):
    with torch.no_grad():
        on = simulate(_model(), graph, STEPS, initial_infected=6, mode="expected")
        off = simulate(_model(sick=0.0, isolating=0.0), graph, STEPS, initial_infected=6,
                       mode="expected")  # fmt: skip
        more = simulate(_model(sick=6.0, isolating=10.0), graph, STEPS, initial_infected=6,
                        mode="expected")  # fmt: skip
    losses = [float(t.flows["labour.job_losses"].sum()) for t in (off, on, more)]
    assert losses[0] < losses[1] < losses[2], losses


def test_initial_infected_seeds_only_the_epidemic(graph):
    model = _model()
    with torch.no_grad():
        traj = simulate(model, graph, 2, initial_infected=6, mode="expected")
        alone = simulate(_labour(), graph, 2, mode="expected")
        both = simulate(model, graph, 2, initial_infected={"epi": 6, "behaviour": 5},
                        mode="expected")  # fmt: skip
        seeded = simulate(_labour(), graph, 2, initial_infected=6, mode="expected")
    assert float(traj.counts["epi.E"][0]) == 6
    assert float(traj.counts["behaviour.adopted"][0]) == 0
    assert torch.equal(traj.counts["labour.unemployed"][0], alone.counts["unemployed"][0])
    assert float(both.counts["behaviour.adopted"][0]) == 5
    # alone, the market still reads initial_infected as its initially unemployed (unchanged)
    assert float(seeded.counts["unemployed"][0]) <= 6
    assert not torch.equal(seeded.counts["unemployed"][0], alone.counts["unemployed"][0])


def test_streams_are_namespaced_per_child(graph):
    """Two identical children draw different numbers; each equals the same child alone in a
    Compose under its name."""
    sir = dict(initial_infected=3, seed=1, steps=10)
    with torch.no_grad():
        pair = simulate(Compose(a=SIR(0.3, 0.1), b=SIR(0.3, 0.1)), graph, **sir)
        only_b = simulate(Compose(b=SIR(0.3, 0.1)), graph, **sir)
    assert not torch.equal(pair.counts["a.I"], pair.counts["b.I"])
    assert torch.equal(pair.counts["b.I"], only_b.counts["b.I"])


# ---------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "links, match",
    [
        ({"labour.sick": "epi.I"}, r"ports \['epi.infectiousness_factor'.*epi\.I.*None"),
        (
            {
                "epi.infectiousness_factor": None,
                "epi.susceptibility_factor": None,
                "labour.sick": "epi.I",
            },
            r"\['labour.isolating'\] are not linked",
        ),
        ({"labour.bogus": "epi.I"}, r"'labour.bogus', which is no port; the ports are"),
        ({"labour.sick": "flu.I"}, r"names no child's entry.*among \['epi', 'labour'\]"),
        ({"labour.sick": "epi.Q"}, r"no state entry 'Q'; its entries are \['S', 'E', 'I'"),
        ({"labour.sick": "epi.flows.cases"}, r"no flow 'cases'; its flows are \['infections'"),
        ({"epi.infectiousness_factor": "labour.flows.job_losses"}, r"runs after 'epi'"),
        ({"labour.sick": 3}, r"must be a source string"),
    ],
)
def test_bad_links_raise_at_construction(links, match):
    full = {
        "epi.infectiousness_factor": None,
        "epi.susceptibility_factor": None,
        "labour.sick": None,
        "labour.isolating": None,
    }
    if "are not linked" in match or "epi.infectiousness_factor'" in match:
        full = {}  # only the links given: the unlinked ports are listed
    with pytest.raises(ValueError, match=match):
        Compose(epi=SEIRM(), labour=_labour(), links={**full, **links})


def test_bad_children_raise():
    with pytest.raises(ValueError, match=r"dt differ: \{'epi': 1.0, 'labour': 7.0\}"):
        Compose(epi=SIR(0.1, 0.1), labour=LabourMarket(dt=7.0))
    with pytest.raises(ValueError, match="child 'x' must be a lpm_graph Protocol"):
        Compose(x=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="needs at least one protocol"):
        Compose()
    with pytest.raises(ValueError, match="identifier without '.'"):
        Compose({"a.b": SIR(0.1, 0.1)})
    with pytest.raises(ValueError, match="first must be an int >= 0"):
        SlotSum(-1)


def test_bad_runs_raise(graph):
    model = _model()
    with pytest.raises(ValueError, match=r"names \['flu'\], which are no children"):
        simulate(model, graph, 2, initial_infected={"flu": 3})
    with pytest.raises(ValueError, match="Compose child 'epi': initial_infected is required"):
        simulate(model, graph, 2)
    model.protocols.labour.sick_job_loss.data.fill_(-1.0)
    with pytest.raises(ValueError, match="sick_job_loss"):
        simulate(model, graph, 2, initial_infected=3)


def test_print_shows_the_whole_plan():
    text = str(_model())
    for line in (
        "[behaviour] ThresholdAdoption (initial condition: initial_adopters)",
        "1. behaviour.adoption",
        "2. epi.infection",
        "3. epi.progression",
        "4. labour.job_loss",
        "6. labour.claims",
        "port infectious <- epi.I",
        "port infectiousness_factor <- Protection(efficacy=0.6)(behaviour.adopted)",
        "port isolating <- SlotSum(2, None)(epi.I)",
    ):
        assert line in text, line
    with pytest.raises(TypeError, match="no flat list of phases"):
        _model().phases  # noqa: B018  (a partitioned per-phase run would bypass the links)


# ---------------------------------------------------------------------------- runs


def test_stochastic_runs_are_reproducible_bit_for_bit(graph):
    def run(seed):
        with torch.no_grad():
            return simulate(_model(), graph, STEPS, initial_infected=6, seed=seed)

    a, b, c = run(7), run(7), run(8)
    for table in ("counts", "flows"):
        for name, value in getattr(a, table).items():
            assert torch.equal(value, getattr(b, table)[name]), name
    assert any(not torch.equal(v, c.counts[k]) for k, v in a.counts.items())


def test_ensemble_columns_equal_single_seed_runs(graph):
    with torch.no_grad():
        both = simulate(_model(), graph, STEPS, initial_infected=6, seed=[3, 5])
        one = simulate(_model(), graph, STEPS, initial_infected=6, seed=5)
        reps = simulate(_model(), graph, STEPS, initial_infected=6, seed=5, replicates=3)
    for name in ("epi.I", "behaviour.adopted", "labour.unemployed"):
        assert torch.equal(both.counts[name][:, 1], one.counts[name]), name
    assert reps.counts["labour.unemployed"].shape == (STEPS + 1, 3)


@pytest.mark.parametrize("estimator", ["straight_through", "conditional_mean"])
def test_stochastic_gradients_reach_the_other_children(graph, estimator):
    model = _model()
    traj = simulate(model, graph, STEPS, initial_infected=6, seed=2, estimator=estimator,
                    replicates=4)  # fmt: skip
    traj.counts["labour.unemployed"][-1].sum().backward()
    r = model.protocols.epi.reproduction_number
    efficacy = model.transforms["epi:infectiousness_factor"].efficacy
    assert r.grad is not None and torch.isfinite(r.grad)
    assert efficacy.grad is not None and torch.isfinite(efficacy.grad)


def test_stochastic_derivative_runs(graph):
    model = _model()
    traj = simulate(model, graph, STEPS, initial_infected=6, seed=2,
                    estimator="stochastic_derivative", alternatives=2)  # fmt: skip
    value = traj.expectation(lambda tr: tr.counts["labour.unemployed"][-1])
    value.backward()
    assert torch.isfinite(model.protocols.epi.reproduction_number.grad)


def test_checkpointing_gives_the_same_gradients(graph):
    grads = []
    for checkpoint in (None, 3):
        model = _model()
        traj = simulate(model, graph, STEPS, initial_infected=6, mode="expected",
                        dtype=torch.float64, checkpoint=checkpoint)  # fmt: skip
        traj.counts["labour.unemployed"][-1].backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 5
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_a_used_model_pickles_and_its_copy_runs_the_same(graph):
    model = _model()
    with torch.no_grad():
        first = simulate(model, graph, STEPS, initial_infected=6, seed=3)
        copy = pickle.loads(pickle.dumps(model))
        again = simulate(copy, graph, STEPS, initial_infected=6, seed=3)
    for name, value in first.counts.items():
        assert torch.equal(again.counts[name], value), name
    torch.save(model, io.BytesIO())


def test_a_state_given_to_simulate_is_checked(graph):
    model = _model()
    with torch.no_grad():
        traj = simulate(model, graph, 1, initial_infected=6, mode="expected")
        state = dict(traj.final_state)
        again = simulate(model, graph, 2, state=state, mode="expected")
        assert again.counts["epi.S"].shape == (3,)
        state["epi.S"] = state["epi.S"] + 0.5
        with pytest.raises(ValueError, match="exactly one compartment|in \\[0, 1\\]"):
            simulate(model, graph, 2, state=state, mode="expected")
