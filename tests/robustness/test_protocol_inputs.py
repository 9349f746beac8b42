"""Bad protocol parameters (SIR, SEIRM, durations, interventions, progressions, the other
protocols) and bad input to the samplers: a ValueError naming the argument, the value and
the fix, at construction (or at the start of a run, before any step); never a crash inside
torch, never a silently wrong run. Table-driven: each case is the call, the error class
and a phrase of its message."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.datasets import erdos_renyi
from lpm_graph.layers import HeteroLayer, RandomStreams, Transmission, bernoulli_st, categorical_st
from lpm_graph.protocols import (
    SEIRM,
    SIR,
    BoundedConfidence,
    CapacityShock,
    Duration,
    EdgeTypeClosure,
    Isolation,
    LabourMarket,
    Progression,
    Schedule,
    StagedSEIRM,
    SupplyChain,
    Testing,
    ThresholdAdoption,
    Transition,
    Vaccination,
    firm_graph,
    firm_network,
    infectiousness_kernel,
)

N = 20
nan, inf = math.nan, math.inf


@pytest.fixture(scope="module")
def graph():
    g = erdos_renyi(N, 3.0, seed=0)
    g.set_node_attrs(age_group=torch.arange(N) % 8)
    return g


def _run(protocol, g, **kwargs):
    return simulate(protocol, g, 2, initial_infected=2, **kwargs)


def _ages(values):
    g = erdos_renyi(N, 3.0, seed=0)
    g.set_node_attrs(age_group=values)
    return g


def _fixed(days=1.0):
    return Duration.fixed(days)


CASES = [
    # (id, call(graph), error class, phrase)
    (
        "SIR transmission_rate negative",
        lambda g: SIR(-0.1, 0.1),
        ValueError,
        "transmission_rate must be a non-negative rate per unit time, got -0.1",
    ),
    (
        "SIR transmission_rate NaN",
        lambda g: SIR(nan, 0.1),
        ValueError,
        "transmission_rate contains NaN",
    ),
    (
        "SIR transmission_rate inf",
        lambda g: SIR(inf, 0.1),
        ValueError,
        "transmission_rate contains NaN or infinite",
    ),
    (
        "SIR transmission_rate a str",
        lambda g: SIR("0.1", 0.1),
        ValueError,
        "transmission_rate must be a number or a tensor, got '0.1'",
    ),
    (
        "SIR transmission_rate None",
        lambda g: SIR(None, 0.1),
        ValueError,
        "transmission_rate must be a number",
    ),
    (
        "SIR transmission_rate a bool",
        lambda g: SIR(True, 0.1),
        ValueError,
        "transmission_rate must be a number or a tensor, got True",
    ),
    (
        "SIR relations a str",
        lambda g: SIR(0.1, 0.1, relations="contact"),
        ValueError,
        "write relations=['contact']",
    ),
    (
        "SIR recovery_rate negative",
        lambda g: SIR(0.1, -1),
        ValueError,
        "recovery_rate must be a non-negative rate",
    ),
    (
        "SIR dt zero",
        lambda g: SIR(0.1, 0.1, dt=0),
        ValueError,
        "dt must be a finite positive number, got 0",
    ),
    (
        "SIR dt NaN",
        lambda g: SIR(0.1, 0.1, dt=nan),
        ValueError,
        "dt must be a finite positive number, got nan",
    ),
    (
        "SIR dt a tensor",
        lambda g: SIR(0.1, 0.1, dt=torch.tensor(1.0)),
        ValueError,
        "dt must be a finite positive number",
    ),
    (
        "SIR order unknown",
        lambda g: SIR(0.1, 0.1, order="first"),
        ValueError,
        "order='first' is not a step order",
    ),
    ("SIR backend unknown", lambda g: SIR(0.1, 0.1, backend="nope"), ValueError, "backend='nope'"),
    (
        "SIR per-edge rates of the wrong length",
        lambda g: _run(SIR(torch.full((5,), 0.1), 0.1), g),
        ValueError,
        "transmission_rate has shape [5]",
    ),
    (
        "SIR recovery_rate per agent",
        lambda g: _run(SIR(0.1, torch.full((N,), 0.1)), g),
        ValueError,
        "recovery_rate must be a scalar",
    ),
    (
        "SIR an unknown relation",
        lambda g: _run(SIR(0.1, 0.1, relations=[("agent", "school", "agent")]), g),
        ValueError,
        "unknown relation ('agent', 'school', 'agent')",
    ),
    (
        "SEIRM reproduction_number negative",
        lambda g: SEIRM(-1.0),
        ValueError,
        "reproduction_number must be a non-negative rate",
    ),
    (
        "SEIRM mortality 2",
        lambda g: SEIRM(2.0, 2.0),
        ValueError,
        "mortality must be a probability in [0, 1]",
    ),
    ("SEIRM mortality NaN", lambda g: SEIRM(2.0, nan), ValueError, "mortality contains NaN"),
    (
        "SEIRM mortality of the wrong length",
        lambda g: _run(SEIRM(2.0, torch.full((3,), 0.01)), g),
        ValueError,
        "mortality must be a scalar or one probability per age group (8), got shape [3]",
    ),
    (
        "SEIRM reproduction_number 2-D",
        lambda g: _run(SEIRM(torch.ones(2, 2)), g),
        ValueError,
        "reproduction_number must be a scalar or [T]",
    ),
    (
        "SEIRM susceptibility of the wrong length",
        lambda g: SEIRM(susceptibility=[1.0] * 3),
        ValueError,
        "susceptibility needs one value per age group (8), got shape [3]",
    ),
    (
        "SEIRM susceptibility negative",
        lambda g: SEIRM(susceptibility=[-1.0] * 8),
        ValueError,
        "susceptibility must be a non-negative",
    ),
    (
        "SEIRM infectiousness without I",
        lambda g: SEIRM(infectiousness={"E": 1.0}),
        ValueError,
        "infectiousness needs exactly the stages 'E' and 'I'",
    ),
    (
        "SEIRM infectiousness NaN",
        lambda g: SEIRM(infectiousness={"E": nan, "I": 1.0}),
        ValueError,
        "infectiousness contains NaN",
    ),
    (
        "SEIRM edge_type_weights negative",
        lambda g: SEIRM(edge_type_weights={"contact": -1.0}),
        ValueError,
        "edge_type_weights must be a non-negative",
    ),
    (
        "SEIRM edge_type_weights a list",
        lambda g: SEIRM(edge_type_weights=[1.0]),
        ValueError,
        "edge_type_weights must map edge-type names to weights",
    ),
    (
        "SEIRM edge_type_weights naming no relation",
        lambda g: _run(SEIRM(edge_type_weights={"school": 1.0}), g),
        ValueError,
        "unknown relation 'school'",
    ),
    (
        "SEIRM kernel_mean 0",
        lambda g: SEIRM(kernel_mean=0),
        ValueError,
        "kernel_mean must be a finite positive number, got 0",
    ),
    (
        "SEIRM kernel_sd NaN",
        lambda g: SEIRM(kernel_sd=nan),
        ValueError,
        "kernel_sd must be a finite positive number, got nan",
    ),
    (
        "SEIRM kernel_mean in the wrong unit",
        lambda g: SEIRM(kernel_mean=1e9),
        ValueError,
        "kernel_mean=1000000000.0, kernel_sd=2.14: the infectiousness kernel",
    ),
    ("SEIRM exposed an int", lambda g: SEIRM(exposed=3), ValueError, "exposed must be a Duration"),
    (
        "SEIRM exposed of 1e9 days",
        lambda g: SEIRM(exposed=Duration.fixed(1e9)),
        ValueError,
        "Duration.fixed(1e+09) spans 1,000,000,000 steps",
    ),
    (
        "SEIRM dt not dividing a fixed stay",
        lambda g: SEIRM(dt=0.7),
        ValueError,
        "choose dt dividing it",
    ),
    (
        "SEIRM interventions of strs",
        lambda g: SEIRM(interventions=["closure"]),
        ValueError,
        "Intervention modules",
    ),
    (
        "SEIRM one intervention, not a list",
        lambda g: SEIRM(interventions=EdgeTypeClosure("school", Schedule.always())),
        ValueError,
        "wrap a single one: interventions=[...]",
    ),
    (
        "SEIRM without age groups",
        lambda g: _run(SEIRM(), erdos_renyi(N, 3.0, seed=1)),
        ValueError,
        "add it with graph.set_node_attrs('agent', age_group=...)",
    ),
    (
        "SEIRM age groups out of range",
        lambda g: _run(SEIRM(), _ages(torch.arange(N))),
        ValueError,
        "'age_group' has values in [0, 19]",
    ),
    (
        "SEIRM age groups of floats",
        lambda g: _run(SEIRM(), _ages(torch.zeros(N))),
        ValueError,
        "'age_group' must be an integer tensor [20]",
    ),
    (
        "SEIRM an unknown node type",
        lambda g: _run(SEIRM(node_type="person"), g),
        ValueError,
        "unknown node type 'person'",
    ),
    (
        "StagedSEIRM mortality=",
        lambda g: StagedSEIRM(mortality=0.1),
        ValueError,
        "mortality= is set by the progression table",
    ),
    (
        "StagedSEIRM progression a dict",
        lambda g: StagedSEIRM(progression={"E": []}),
        ValueError,
        "progression must be a Progression",
    ),
    (
        "Progression stages a list",
        lambda g: Progression([Transition("R", 1.0, _fixed())]),
        ValueError,
        "stages must map each stage name to its transitions",
    ),
    (
        "Progression probability above 1",
        lambda g: Progression({"E": [Transition("R", 1.5, _fixed())]}),
        ValueError,
        "stage 'E' -> 'R': probabilities in [0, 1]",
    ),
    (
        "Progression an unknown target",
        lambda g: Progression({"E": [Transition("X", 1.0, _fixed())]}),
        ValueError,
        "leads to 'X'",
    ),
    (
        "Progression probabilities not summing to 1",
        lambda g: Progression({"E": [Transition("R", 0.5, _fixed())]}),
        ValueError,
        "must sum to 1",
    ),
    (
        "Progression probabilities of the wrong length",
        lambda g: Progression({"E": [Transition("R", [1.0] * 3, _fixed())]}),
        ValueError,
        "one value per age group (8), got shape [3]",
    ),
    (
        "Progression a duration that is not a Duration",
        lambda g: Progression({"E": [Transition("R", 1.0, 3)]}),
        ValueError,
        "Transition(target, probability, Duration)",
    ),
    ("Duration an unknown kind", lambda g: Duration("weibull", 3), ValueError, "kind='weibull'"),
    (
        "Duration a number as the kind",
        lambda g: Duration(3, 5.0),
        ValueError,
        "kind=3 is not a duration kind",
    ),
    (
        "Duration.fixed(0)",
        lambda g: Duration.fixed(0),
        ValueError,
        "mean must be a finite positive number, got 0",
    ),
    ("Duration.fixed(NaN)", lambda g: Duration.fixed(nan), ValueError, "got nan"),
    ("Duration.fixed a str", lambda g: Duration.fixed("3"), ValueError, "got '3'"),
    (
        "Duration.gamma sd 0",
        lambda g: Duration.gamma(3, 0),
        ValueError,
        "needs a finite positive sd, got sd=0",
    ),
    (
        "Duration.fixed of 1e12 steps",
        lambda g: Duration.fixed(1e12).pmf(1.0),
        ValueError,
        "spans 1,000,000,000,000 steps of dt = 1",
    ),
    (
        "Duration.geometric of 1e12 days",
        lambda g: Duration.geometric(1e12).pmf(1.0),
        ValueError,
        "is the mean in the time unit of dt",
    ),
    (
        "Duration.gamma of 1e9 days",
        lambda g: Duration.gamma(1e9, 1.0).pmf(1.0),
        ValueError,
        "more than 1,000,000",
    ),
    (
        "Duration.pmf dt 0",
        lambda g: Duration.fixed(3).pmf(0),
        ValueError,
        "dt must be a finite positive step length, got 0",
    ),
    (
        "Duration.pmf dt negative",
        lambda g: Duration.geometric(3).pmf(-1),
        ValueError,
        "dt must be a finite positive step length, got -1",
    ),
    (
        "Duration.sample n negative",
        lambda g: Duration.fixed(3).sample(-1, 1.0),
        ValueError,
        "n must be a non-negative int, got -1",
    ),
    (
        "infectiousness_kernel sd negative",
        lambda g: infectiousness_kernel(5.5, -1.0),
        ValueError,
        "kernel mean and sd must be finite and positive, got mean=5.5, sd=-1.0",
    ),
    (
        "infectiousness_kernel dt 0",
        lambda g: infectiousness_kernel(5.5, 2.0, 0),
        ValueError,
        "dt must be a finite positive step length",
    ),
    (
        "infectiousness_kernel an unknown timing",
        lambda g: infectiousness_kernel(infection_time="noon"),
        ValueError,
        "infection_time='noon'",
    ),
    ("Schedule level 2", lambda g: Schedule([(0, 10, 2.0)]), ValueError, "level must be in [0, 1]"),
    (
        "Schedule end before start",
        lambda g: Schedule([(10, 0, 1.0)]),
        ValueError,
        "end must be after start",
    ),
    (
        "Schedule NaN level",
        lambda g: Schedule([(0, 10, nan)]),
        ValueError,
        "level must be in [0, 1]",
    ),
    (
        "Schedule one window, not a list",
        lambda g: Schedule((0, 10, 1.0)),
        ValueError,
        "windows is a list of them, e.g. [(10, 40, 1.0)]",
    ),
    (
        "Schedule a text level",
        lambda g: Schedule([(0, 10, "x")]),
        ValueError,
        "three numbers, got (0, 10, 'x')",
    ),
    ("Schedule.always(1.5)", lambda g: Schedule.always(1.5), ValueError, "level must be in [0, 1]"),
    (
        "EdgeTypeClosure compliance 1.5",
        lambda g: EdgeTypeClosure("school", Schedule.always(), 1.5),
        ValueError,
        "compliance must be a finite number in [0, 1], got 1.5",
    ),
    (
        "EdgeTypeClosure compliance NaN",
        lambda g: EdgeTypeClosure("school", Schedule.always(), nan),
        ValueError,
        "compliance must be a finite number in [0, 1], got nan",
    ),
    (
        "EdgeTypeClosure compliance a str",
        lambda g: EdgeTypeClosure("school", Schedule.always(), "1"),
        ValueError,
        "compliance must be a finite number in [0, 1], got '1'",
    ),
    (
        "EdgeTypeClosure schedule a list",
        lambda g: EdgeTypeClosure("school", [(0, 10, 1.0)]),
        ValueError,
        "schedule must be a Schedule",
    ),
    (
        "EdgeTypeClosure edge_type an int",
        lambda g: EdgeTypeClosure(3, Schedule.always()),
        ValueError,
        "edge_type must be an edge-type name",
    ),
    (
        "Isolation delay negative",
        lambda g: Isolation(Schedule.always(), delay=-1),
        ValueError,
        "delay must be a finite number in [0, inf] of days, got -1",
    ),
    (
        "Isolation delay a str",
        lambda g: Isolation(Schedule.always(), delay="1"),
        ValueError,
        "delay must be a finite number",
    ),
    (
        "Testing sensitivity 2",
        lambda g: Testing(Schedule.always(), sensitivity=2),
        ValueError,
        "sensitivity must be a finite number in [0, 1], got 2",
    ),
    (
        "Vaccination capacity negative",
        lambda g: Vaccination(-1),
        ValueError,
        "capacity must be a finite non-negative number of doses per day, got -1",
    ),
    (
        "Vaccination capacity a str",
        lambda g: Vaccination("10"),
        ValueError,
        "capacity must be a finite non-negative number",
    ),
    (
        "Vaccination doses 3",
        lambda g: Vaccination(10, doses=3),
        ValueError,
        "doses must be 1 or 2, got 3",
    ),
    (
        "Vaccination interval negative",
        lambda g: Vaccination(10, doses=2, interval=-5),
        ValueError,
        "interval must be a finite number in (0, inf] of days between doses, got -5",
    ),
    (
        "Vaccination interval NaN",
        lambda g: Vaccination(10, doses=2, interval=nan),
        ValueError,
        "interval must be a finite number",
    ),
    (
        "Vaccination start_day NaN",
        lambda g: Vaccination(10, start_day=nan),
        ValueError,
        "start_day must be a finite number (a day), got nan",
    ),
    (
        "Vaccination efficacy 1.5",
        lambda g: Vaccination(10, efficacy_infection=(0.5, 1.5)),
        ValueError,
        "efficacy_infection needs two values in [0, 1]",
    ),
    (
        "Vaccination efficacy NaN",
        lambda g: Vaccination(10, efficacy_death=(nan, 0.5)),
        ValueError,
        "efficacy_death needs two values in [0, 1]",
    ),
    (
        "Vaccination priority incomplete",
        lambda g: Vaccination(10, priority=(0, 1, 2)),
        ValueError,
        "priority must order all 8 age groups 0..7, got [0, 1, 2]",
    ),
    (
        "Vaccination priority of strs",
        lambda g: Vaccination(10, priority=tuple("01234567")),
        ValueError,
        "priority must order all 8 age groups",
    ),
    (
        "BoundedConfidence confidence negative",
        lambda g: BoundedConfidence(confidence=-0.1),
        ValueError,
        "confidence must be a probability in [0, 1]",
    ),
    (
        "BoundedConfidence rule unknown",
        lambda g: BoundedConfidence(rule="avg"),
        ValueError,
        "rule='avg'",
    ),
    (
        "BoundedConfidence sharpness 0",
        lambda g: BoundedConfidence(sharpness=0.0),
        ValueError,
        "sharpness must be a finite number > 0",
    ),
    (
        "ThresholdAdoption threshold 2",
        lambda g: ThresholdAdoption(threshold=2.0),
        ValueError,
        "threshold must be a probability in [0, 1]",
    ),
    (
        "ThresholdAdoption abandonment negative",
        lambda g: ThresholdAdoption(abandonment=-1.0),
        ValueError,
        "abandonment must be a non-negative rate",
    ),
    (
        "LabourMarket hiring_rate NaN",
        lambda g: LabourMarket(hiring_rate=nan),
        ValueError,
        "hiring_rate contains NaN",
    ),
    (
        "LabourMarket num_areas 0",
        lambda g: LabourMarket(num_areas=0),
        ValueError,
        "num_areas must be a positive int, got 0",
    ),
    (
        "LabourMarket on agents without a labour force",
        lambda g: _run(LabourMarket(), g),
        ValueError,
        "add it with graph.set_node_attrs('agent', labour_force=...)",
    ),
    (
        "SupplyChain capacity negative",
        lambda g: SupplyChain(-1.0, 1.0),
        ValueError,
        "capacity must be finite and >= 0",
    ),
    (
        "SupplyChain adjustment_time 0",
        lambda g: SupplyChain(1.0, 1.0, adjustment_time=0.0),
        ValueError,
        "adjustment_time must be finite and > 0",
    ),
    (
        "SupplyChain shocks of floats",
        lambda g: SupplyChain(1.0, 1.0, shocks=[0.5]),
        ValueError,
        "shocks must be CapacityShock modules, got float",
    ),
    (
        "CapacityShock firms and sector",
        lambda g: CapacityShock(0.5, firms=[0], sector="a"),
        ValueError,
        "exactly one of firms= (ids) or sector= (name)",
    ),
    (
        "firm_network negative firms",
        lambda g: firm_network([3, -1], [[0.1, 0.2], [0.2, 0.1]]),
        ValueError,
        "firms_per_sector must be positive ints, got [3, -1]",
    ),
    (
        "firm_network coefficients of the wrong shape",
        lambda g: firm_network([3, 3], [[0.1]]),
        ValueError,
        "input_coefficients must be [K, K] = [2, 2]",
    ),
    (
        "firm_network beyond memory",
        lambda g: firm_network([10**12, 10**12], [[0.1, 0.2], [0.2, 0.1]]),
        ValueError,
        "firm_network of 2,000,000,000,000 firms needs about",
    ),
    (
        "firm_graph with ids beyond its sectors",
        lambda g: firm_graph(torch.tensor([[0], [1]]), [0]),
        ValueError,
        "The firms are those of sector (1): give one sector id per firm",
    ),
    (
        "SupplyChain on an epidemic graph",
        lambda g: _run(SupplyChain(1.0, 1.0), g),
        ValueError,
        "relation='supplies': unknown relation 'supplies'",
    ),
    (
        "HeteroLayer aggr unknown",
        lambda g: HeteroLayer({("agent", "contact", "agent"): Transmission()}, aggr="median"),
        ValueError,
        "aggr='median' is not a reduction",
    ),
    (
        "HeteroLayer a number as a layer",
        lambda g: HeteroLayer({("agent", "contact", "agent"): 5}),
        ValueError,
        "layers[('agent', 'contact', 'agent')] must be a layer",
    ),
    (
        "RandomStreams on a device that does not exist",
        lambda g: RandomStreams(0, "tpu"),
        ValueError,
        "device='tpu' is not a torch device",
    ),
    (
        "RandomStreams seed a float",
        lambda g: RandomStreams(1.5),
        ValueError,
        "seed must be an int or a sequence of ints",
    ),
    (
        "bernoulli_st p above 1",
        lambda g: bernoulli_st(torch.tensor([1.5])),
        ValueError,
        "p must hold probabilities in [0, 1], got 1.5",
    ),
    (
        "bernoulli_st p NaN",
        lambda g: bernoulli_st(torch.tensor([nan])),
        ValueError,
        "p must hold probabilities in [0, 1], got nan",
    ),
    (
        "bernoulli_st survival negative",
        lambda g: bernoulli_st(survival=torch.tensor([-0.5])),
        ValueError,
        "survival must hold probabilities",
    ),
    (
        "bernoulli_st p a list",
        lambda g: bernoulli_st([0.5]),
        ValueError,
        "p must be a floating-point tensor of probabilities, got list",
    ),
    (
        "bernoulli_st neither p nor survival",
        lambda g: bernoulli_st(),
        ValueError,
        "give exactly one of p and survival",
    ),
    (
        "bernoulli_st uniform of the wrong shape",
        lambda g: bernoulli_st(torch.full((3,), 0.5), uniform=torch.rand(4)),
        ValueError,
        "uniform has shape [4]",
    ),
    (
        "categorical_st tau 0",
        lambda g: categorical_st(torch.zeros(3, 2), tau=0),
        ValueError,
        "tau must be a positive temperature, got 0",
    ),
    (
        "categorical_st logits of ints",
        lambda g: categorical_st(torch.zeros(3, 2, dtype=torch.long)),
        ValueError,
        "logits must be a floating-point tensor",
    ),
    (
        "categorical_st dim out of range",
        lambda g: categorical_st(torch.zeros(3, 2), dim=5),
        ValueError,
        "dim=5 is not a dimension of logits [3, 2]",
    ),
    (
        "categorical_st NaN logits",
        lambda g: categorical_st(torch.full((3, 2), nan)),
        ValueError,
        "logits contain NaN",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_protocol_input_is_a_clear_error(graph, call, error, phrase):
    with pytest.raises(error) as raised:
        call(graph)
    assert phrase in str(raised.value)


def test_a_parameter_set_to_nan_after_construction_is_caught_before_the_first_step(graph):
    sir = SIR(0.1, 0.1)
    with torch.no_grad():
        sir.transmission_rate.fill_(nan)
    with pytest.raises(ValueError, match="transmission_rate contains NaN"):
        _run(sir, graph)
