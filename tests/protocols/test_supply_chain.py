"""Supply chain: a 3-firm chain by hand, conservation of goods, the steady state against a
dense solve, gradients (gradcheck, implicit steady state), parameter recovery and input checks."""

from __future__ import annotations

import math

import pytest
import torch

from lpm_graph import simulate
from lpm_graph.layers.samplers import RandomStreams
from lpm_graph.protocols.base import StepContext
from lpm_graph.protocols.supply_chain import (
    CapacityShock,
    SupplyChain,
    firm_graph,
    firm_network,
    sector_values,
    steady_output,
)
from lpm_graph.train import ParameterSet, Positive, SimulatorModel, Trainer

F64 = torch.float64
# Tiers with some same-sector inputs: raw -> parts -> retail (columns sum to < 1).
TABLE = [[0.1, 0.4, 0.0], [0.0, 0.1, 0.5], [0.0, 0.0, 0.0]]
NAMES = ["raw", "parts", "retail"]


def _chain() -> tuple:
    """Firms A -> B -> C (sectors A, B, C), one unit of input per unit of output."""
    graph = firm_graph(torch.tensor([[0, 1], [1, 2]]), [0, 1, 2], sector_names=["A", "B", "C"])
    return graph, torch.tensor([0.0, 0.0, 1.0], dtype=F64)


def _economy(seed: int = 0):
    graph = firm_network([3, 4, 3], TABLE, sector_names=NAMES, seed=seed)
    demand = sector_values(graph, {"retail": 1.0, "parts": 0.2}).double()
    return graph, demand


# ---------------------------------------------------------------------------- by hand


@pytest.mark.parametrize("backend", ["csr", "native"])
def test_three_firm_chain_loses_exactly_the_shortage_computed_by_hand(backend):
    # A -> B -> C, a = 1 on both edges, final demand f = (0, 0, 1), capacity c = 2, target
    # inventory n = 2, adjustment time tau = 1, dt = 1. With a = 1 and tau = dt the order rule
    # is O = max(0, D (1 + n / tau) - S) = max(0, 3 D - S).
    # Steady state: x* = (1, 1, 1); B holds S_B = n x*_B = 2 of A's good, C holds S_C = 2 of
    # B's; orders O_B = O_C = 1. From t = 1 A loses 75% of its capacity: c_A = 0.5.
    # Output x = min(c, S, D); the letter says which binds (c capacity, S inventory, D demand).
    # After the step: S <- S - x + phi_supplier * O and O <- 3 D - S, e.g. t = 2:
    # phi_A = 0.5 / 1.5, S_B = 1.5 - 1 + (0.5 / 1.5) * 1.5 = 1, O_B = 3 * 1 - 1 = 2.
    #
    #  t       | demand D      | output x              | shortage D - x | after the step
    #          | A    B    C   | A     B      C        | A    B    C    | S_B  S_C  O_B  O_C
    #  0       | 1    1    1   | 1 D   1 D    1 D      | 0    0    0    | 2    2    1    1
    #  1 shock | 1    1    1   | .5 c  1 D    1 D      | .5   0    0    | 1.5  2    1.5  1
    #  2       | 1.5  1    1   | .5 c  1 D    1 D      | 1    0    0    | 1    2    2    1
    #  3       | 2    1    1   | .5 c  1 S=D  1 D      | 1.5  0    0    | .5   2    2.5  1
    #  4       | 2.5  1    1   | .5 c  .5 S   1 D      | 2    .5   0    | .5   1.5  2.5  1.5
    #  5       | 2.5  1.5  1   | .5 c  .5 S   1 D      | 2    1    0    | .5   1    4    2
    #  6       | 4    2    1   | .5 c  .5 S   1 S=D    | 3.5  1.5  0    | .5   .5   5.5  2.5
    #  7       | 5.5  2.5  1   | .5 c  .5 S   .5 S     | 5    2    .5   | .5   .5   7    2.5
    #
    # The consumers of C lose 0.5 at t = 7, once B's buffer and then C's have run out.
    graph, demand = _chain()
    chain = SupplyChain(
        2.0,
        demand,
        target_inventory=2.0,
        adjustment_time=1.0,
        shocks=[CapacityShock(0.75, firms=[0], start=1)],
        backend=backend,
    )
    traj = simulate(chain, graph, 8, dtype=F64)
    with torch.no_grad():
        output = torch.tensor([[1, 1, 1]] + [[0.5, 1, 1]] * 3 + [[0.5, 0.5, 1]] * 3 + [[0.5] * 3])
        shortage = torch.tensor(
            [[0, 0, 0], [0.5, 0, 0], [1, 0, 0], [1.5, 0, 0], [2, 0.5, 0], [2, 1, 0]]
            + [[3.5, 1.5, 0], [5, 2, 0.5]]
        )
        inventory_b = torch.tensor([2, 2, 1.5, 1, 0.5, 0.5, 0.5, 0.5, 0.5])  # of A's goods
        inventory_c = torch.tensor([2, 2, 2, 2, 2, 1.5, 1, 0.5, 0.5])  # of B's goods
        orders_b = torch.tensor([1, 1, 1.5, 2, 2.5, 2.5, 4, 5.5, 7])
        orders_c = torch.tensor([1, 1, 1, 1, 1, 1.5, 2, 2.5, 2.5])

        def check(actual, expected):
            torch.testing.assert_close(actual, expected.to(F64), atol=1e-12, rtol=0)

        check(traj.flows["output"], output)
        check(traj.flows["shortage"], shortage)
        check(traj.flows["demand"], output + shortage)
        check(traj.counts["inventory"], torch.stack([inventory_b, inventory_c, 0 * orders_b], 1))
        check(traj.counts["orders"], torch.stack([orders_b, orders_c, 0 * orders_b], 1))
        lost = 8 * 1.0 - traj.flows["consumption"][:, 2].sum()
        assert float(lost) == pytest.approx(0.5, abs=1e-12)


def test_the_layers_send_orders_upstream_and_shipments_downstream():
    # B (sector 1) buys from A1 and A2 (sector 0) with coefficients 0.25 and 0.75: one input
    # slot (B, 0) with A = 1 and shares w = (0.25, 0.75). B orders 4 units of sector 0.
    graph = firm_graph(torch.tensor([[0, 1], [2, 2]]), [0, 0, 1])
    graph["firm", "supplies", "firm"].edge_weight = torch.tensor([0.25, 0.75])
    chain = SupplyChain(10.0, 0.0, backend="native")
    net = chain.network(graph)
    orders = torch.zeros(3, 2, dtype=F64)
    orders[2, 0] = 4.0
    _, share = net.tensors(F64)
    demand = chain.phases[0].orders(net.up, orders.reshape(-1), share)
    torch.testing.assert_close(demand, torch.tensor([1.0, 3.0, 0.0], dtype=F64))
    # A1 fills half of what it is asked, A2 all: B receives 0.5 * 1 + 1 * 3 = 3.5.
    fill = torch.tensor([0.5, 1.0, 1.0], dtype=F64)
    received = chain.phases[2].shipments(net.down, fill, orders.reshape(-1), share)
    torch.testing.assert_close(received.reshape(3, 2)[2], torch.tensor([3.5, 0.0], dtype=F64))


def test_plan_names_the_four_phases_in_order():
    text = repr(SupplyChain(1.0, 1.0))
    order = [
        text.index(f"{k}. {name}")
        for k, name in enumerate(("demand", "production", "shipping", "ordering"), start=1)
    ]
    assert order == sorted(order)


# ---------------------------------------------------------------------------- invariants


def test_goods_are_conserved_along_the_chain_and_stay_non_negative():
    graph, demand = _economy()
    x = steady_output(graph, demand)
    capacity = 1.15 * x
    shocks = [
        CapacityShock(0.7, sector="raw", start=3, end=15),
        CapacityShock(torch.tensor([0.5, 0.9], dtype=F64), firms=[4, 5], start=8),
    ]
    chain = SupplyChain(capacity, demand, 4.0, 3.0, shocks=shocks, by_firm=True)
    traj = simulate(chain, graph, 30, dtype=F64, record_states=True)
    with torch.no_grad():
        fl, counts = traj.flows, traj.counts
        assert float(fl["shortage"].sum()) > 1.0  # the shock did bite
        # what a sector produces goes to other firms or to final demand
        torch.testing.assert_close(fl["output"], fl["shipments"] + fl["consumption"])
        # what suppliers ship (supplier side, from their output) arrives in the buyers'
        # inventories (buyer side, through the downstream message pass)
        change = counts["inventory"].diff(dim=0)
        torch.testing.assert_close(change, fl["shipments"] - fl["input_use"])
        # economy-wide stock-flow identity over the whole run
        total = counts["inventory"][-1].sum() - counts["inventory"][0].sum()
        produced = fl["output"].sum() - fl["consumption"].sum() - fl["input_use"].sum()
        torch.testing.assert_close(total, produced)
        assert all(float(s["inventory"].min()) >= 0 for s in traj.states)
        assert all(float(s["orders"].min()) >= 0 for s in traj.states)
        assert float(fl["shortage_by_firm"].min()) >= 0
        assert bool((fl["output_by_firm"] <= capacity + 1e-12).all())
        assert float(fl["output"].sum()) < float(fl["demand"].sum())


def test_the_steady_state_solves_leontief_and_stays_put():
    graph, demand = _economy(seed=3)
    x = steady_output(graph, demand)
    src, dst = graph.edge_index()
    a = torch.zeros(10, 10, dtype=F64)
    a.index_put_((src, dst), graph.edge_weight().double(), accumulate=True)
    dense = torch.linalg.solve(torch.eye(10, dtype=F64) - a, demand)
    torch.testing.assert_close(x, dense, atol=1e-12, rtol=0)
    for dt in (1.0, 0.5):
        chain = SupplyChain(1.5 * x, demand, 3.0, 2.0, dt=dt)
        with torch.no_grad():
            traj = simulate(chain, graph, 15, dtype=F64)
        per_sector = torch.zeros(3, dtype=F64).index_add(0, graph["firm"].sector, x * dt)
        torch.testing.assert_close(traj.flows["output"], per_sector.expand(15, 3))
        assert float(traj.flows["shortage"].abs().max()) < 1e-12
        torch.testing.assert_close(
            traj.counts["inventory"], traj.counts["inventory"][:1].expand(16, 3)
        )


def test_a_deeper_shock_loses_more_and_reaches_downstream_later():
    graph, demand = _economy()
    capacity = 1.2 * steady_output(graph, demand)
    totals = []
    for fraction in (0.3, 0.6, 0.9):
        shock = CapacityShock(fraction, sector="raw", start=2)
        with torch.no_grad():
            traj = simulate(SupplyChain(capacity, demand, 3.0, 3.0, shocks=[shock]), graph, 25)
        totals.append(float(traj.flows["shortage"].sum()))
    assert totals[0] < totals[1] < totals[2]
    first = [int((traj.flows["shortage"][:, k] > 1e-6).nonzero()[0]) for k in range(3)]
    assert first[0] == 2 and first[0] < first[1] < first[2]  # raw, then parts, then retail


# ---------------------------------------------------------------------------- gradients


def test_step_gradcheck_in_float64():
    graph = firm_network([2, 3, 2], TABLE, seed=1)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, low=0.2, high=2.0):
        return (low + (high - low) * torch.rand(*shape, generator=gen, dtype=F64)).requires_grad_()

    inputs = (
        rand(7, low=0.3, high=1.5),  # capacity
        rand(7, low=0.0, high=0.5),  # final demand
        rand(7, low=1.0, high=4.0),  # target inventory
        rand((), low=2.0, high=3.0),  # adjustment time
        rand(2, low=0.1, high=0.6),  # shock fractions of firms 1 and 4
        rand(7, 3, low=0.05, high=0.6),  # inventory
        rand(7, 3, low=0.0, high=1.0),  # orders
    )

    def step(capacity, demand, n, tau, fraction, inventory, orders):
        shock = CapacityShock(fraction, firms=[1, 4], start=0)
        chain = SupplyChain(capacity, demand, n, tau, shocks=[shock], backend="native")
        state = {"inventory": inventory, "orders": orders}
        ctx = StepContext.begin(0, chain.dt, state, RandomStreams(0), "expected")
        new = chain.step(graph, state, ctx)
        flows = ctx.flows
        return new["inventory"], new["orders"], flows["output"], flows["consumption"]

    # every branch of the min is exercised, away from ties (gradcheck needs no kinks)
    with torch.no_grad():
        out = step(*inputs)
        chain = SupplyChain(inputs[0], inputs[1], backend="native")
        net = chain.network(graph)
        a, share = net.tensors(F64)
        demand = chain.phases[0].orders(net.up, inputs[6].reshape(-1), share) + inputs[1]
        cap = inputs[0] * torch.ones(7, dtype=F64)
        cap[[1, 4]] *= 1 - inputs[4]
        per_input = torch.where(a > 0, inputs[5] / a.clamp_min(1e-300), math.inf).amin(1)
        limits = torch.stack([cap, per_input, demand], 1)
        binding = limits.argmin(1)
        assert set(binding.tolist()) == {0, 1, 2}, limits
        gaps = limits.sort(1).values.diff(dim=1)[:, 0]
        assert float(gaps.min()) > 1e-3
        # orders away from the relu kink, some of them clamped at 0
        n, tau = inputs[2][:, None], inputs[3]
        unclamped = a * demand[:, None] * (1 + n / tau) - out[0] / tau
        assert float(unclamped[a > 0].abs().min()) > 1e-3
        assert bool((unclamped[a > 0] < 0).any()) and bool((unclamped[a > 0] > 0).any())
    assert torch.autograd.gradcheck(step, inputs)


def test_steady_output_gradient_is_the_implicit_one():
    graph, demand = _economy(seed=2)  # same-sector inputs make cycles
    f = (demand + 0.1).requires_grad_()  # > 0: gradcheck's perturbations stay valid
    assert torch.autograd.gradcheck(lambda d: steady_output(graph, d, backend="native"), (f,))


def test_gradients_reach_capacities_order_policy_and_shock():
    graph, demand = _economy()
    capacity = (1.2 * steady_output(graph, demand)).requires_grad_()
    fraction = torch.tensor(0.6, dtype=F64, requires_grad=True)
    chain = SupplyChain(
        capacity, demand, 4.0, 3.0, shocks=[CapacityShock(fraction, sector="raw", start=3)]
    )
    assert isinstance(chain.target_inventory, torch.nn.Parameter)
    assert {n for n, _ in chain.named_parameters()} == {
        "final_demand",
        "target_inventory",
        "adjustment_time",
    }  # capacity requires grad already: used as it is (functional use)
    traj = simulate(chain, graph, 20, dtype=F64)
    lost = traj.flows["shortage"].sum()
    lost.backward()
    raw = graph["firm"].sector == 0
    assert float(capacity.grad[raw].sum()) < 0  # more raw capacity, less shortage
    assert float(fraction.grad) > 0  # a deeper shock, more shortage
    assert float(chain.target_inventory.grad) != 0
    assert float(chain.adjustment_time.grad) != 0


def test_backends_agree_on_values_and_gradients():
    graph, demand = _economy()
    capacity = 1.2 * steady_output(graph, demand)
    results = []
    for backend in ("csr", "native"):
        chain = SupplyChain(
            capacity,
            demand,
            4.0,
            3.0,
            shocks=[CapacityShock(0.7, sector="raw", start=2, end=10)],
            backend=backend,
        )
        traj = simulate(chain, graph, 20, dtype=F64)
        traj.flows["shortage"].sum().backward()
        results.append((traj.flows["output"].detach(), chain.target_inventory.grad))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-10, rtol=1e-10)


def test_checkpointed_run_gives_the_same_trajectory_and_gradient():
    graph, demand = _economy()
    capacity = 1.2 * steady_output(graph, demand)
    runs = []
    for checkpoint in (None, 4):
        chain = SupplyChain(
            capacity, demand, shocks=[CapacityShock(0.8, sector="parts", start=1)], backend="native"
        )
        traj = simulate(chain, graph, 12, dtype=F64, checkpoint=checkpoint)
        traj.flows["shortage"].sum().backward()
        runs.append((traj.flows["shortage"].detach(), chain.adjustment_time.grad.clone()))
    torch.testing.assert_close(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1])


# ---------------------------------------------------------------------------- calibration


def test_capacities_and_order_policy_are_recovered_from_simulated_data():
    # Truth: capacity margins 1.3 (raw) and 1.25 (parts) over the steady output, target
    # inventory n = 4, adjustment time tau = 3; raw loses 80% of its capacity for steps 3-14.
    # Observed: output and shortage per sector, 30 steps. Fitted with Adam on log-parameters
    # from 20% too little capacity, n 40% too high and tau 40% too low. Capacities start
    # below the truth on purpose: a capacity that never binds has a zero gradient (the loss
    # is flat above the level where it stops binding). The retail capacity never binds
    # (retail output cannot exceed its demand), so it is known, not fitted.
    # Measured: recovered / truth = 1.008, 0.971, 0.997, 0.979 (150 epochs, ~6 s).
    graph, demand = _economy()
    x = steady_output(graph, demand)
    sector = graph["firm"].sector
    shock = CapacityShock(0.8, sector="raw", start=3, end=15)

    def run(log_params):
        raw, parts, n, tau = log_params.exp()
        margin = torch.stack([raw, parts, torch.tensor(1.2, dtype=F64)])
        chain = SupplyChain(margin[sector] * x, demand, n, tau, shocks=[shock], backend="native")
        traj = simulate(chain, graph, 30, dtype=F64)
        return torch.cat([traj.flows["output"], traj.flows["shortage"]], 1)  # [30, 6]

    truth = torch.tensor([1.3, 1.25, 4.0, 3.0], dtype=F64)
    with torch.no_grad():
        observed = run(truth.log())
    assert float(observed[:, 3:].sum(0).min()) > 1.0  # every sector runs short at some point
    start = truth * torch.tensor([0.8, 0.8, 1.4, 0.6], dtype=F64)
    theta = start.log().requires_grad_()
    optimizer = torch.optim.Adam([theta], lr=0.05)
    scale = observed.pow(2).mean(0)
    for _ in range(150):
        optimizer.zero_grad()
        loss = ((run(theta) - observed).pow(2).mean(0) / scale).sum()
        loss.backward()
        optimizer.step()
    ratio = theta.detach().exp() / truth
    assert float(loss.detach()) < 1e-2
    assert bool(((ratio - 1).abs() < 0.15).all()), ratio


def test_trains_with_simulator_model_and_trainer():
    # The library's calibration loop: the order policy's target inventory (truth 4) from 7.
    graph, demand = _economy()
    capacity = 1.25 * steady_output(graph, demand)
    shock = CapacityShock(0.8, sector="raw", start=3, end=15)
    outputs = {f"shortage_{k}": (lambda tr, k=k: tr.flows["shortage"][:, k]) for k in range(3)}

    def model(n):
        chain = SupplyChain(capacity, demand, 4.0, 3.0, shocks=[shock], backend="native",
                            learnable=False)  # fmt: skip
        params = ParameterSet({"target_inventory": Positive(n)})
        return SimulatorModel(
            chain, graph, 25, params, initial_infected=None, outputs=outputs
        ).double()

    with torch.no_grad():
        observed = model(4.0)()
    fitted = model(7.0)
    history = Trainer(fitted, lr=0.1, log_every=None).fit(observed, slice(0, 25), epochs=60)
    assert history.loss[-1] < 0.1 * history.loss[0]
    assert float(fitted.values()["target_inventory"]) == pytest.approx(4.0, rel=0.15)


# ---------------------------------------------------------------------------- graphs and checks


def test_firm_network_draws_distinct_suppliers_with_the_sector_coefficients():
    graph = firm_network([5, 6, 4], TABLE, suppliers_per_input=3, sector_names=NAMES, seed=7)
    again = firm_network([5, 6, 4], TABLE, suppliers_per_input=3, sector_names=NAMES, seed=7)
    assert torch.equal(graph.edge_index(), again.edge_index())
    assert graph.meta["sector_names"] == tuple(NAMES)
    src, dst = graph.edge_index()
    sector = graph["firm"].sector
    assert bool((src != dst).all())
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert len(pairs) == src.shape[0]  # no supplier twice
    coefficient = torch.zeros(15, 3, dtype=F64)
    coefficient.index_put_((dst, sector[src]), graph.edge_weight().double(), accumulate=True)
    expected = torch.tensor(TABLE, dtype=F64).T[sector]  # [N, K]: row = buyer's sector column
    torch.testing.assert_close(coefficient, expected, atol=1e-6, rtol=0)
    counts = torch.zeros(15, 3).index_put_(
        (dst, sector[src]), torch.ones(len(src)), accumulate=True
    )
    assert counts[5:11, 1].tolist() == [3.0] * 6  # parts buy from 3 other parts firms


def test_sector_values_and_graph_helpers_check_their_inputs():
    graph = firm_network([2, 2, 2], TABLE, sector_names=NAMES)
    values = sector_values(graph, {"retail": 2.0}, default=0.5)
    assert values.tolist() == [0.5, 0.5, 0.5, 0.5, 2.0, 2.0]
    with pytest.raises(ValueError, match="unknown sector names \\['steel'\\]"):
        sector_values(graph, {"steel": 1.0})
    with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
        firm_graph(torch.tensor([[0, 3], [1, 2]]), [0, 1, 2])
    with pytest.raises(ValueError, match="only 2 sector_names"):
        firm_graph(torch.tensor([[0], [1]]), [0, 1, 2], sector_names=["a", "b"])
    with pytest.raises(ValueError, match="integer"):
        firm_graph(torch.tensor([[0], [1]]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[K, K\] = \[2, 2\]"):
        firm_network([2, 2], TABLE)
    with pytest.raises(ValueError, match="single firm"):
        firm_network([1, 2], [[0.5, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="input_coefficients must be finite and >= 0"):
        firm_network([2, 2], [[0.0, -0.1], [0.0, 0.0]])


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda g: SupplyChain(-1.0, 1.0), "capacity must be finite and >= 0.*got -1"),
        (lambda g: SupplyChain(torch.tensor([1.0, float("nan")]), 1.0), "capacity.*at firm 1"),
        (lambda g: SupplyChain(1.0, 1.0, adjustment_time=0.0), "adjustment_time.*> 0"),
        (lambda g: SupplyChain(1.0, 1.0, target_inventory=-2.0), "target_inventory"),
        (lambda g: SupplyChain(torch.ones(5), 1.0), "capacity has shape \\[5\\].*\\[6\\]"),
        (lambda g: SupplyChain(1.0, torch.ones(6, 2)), "final_demand has shape"),
        (
            lambda g: SupplyChain(1.0, 1.0, shocks=[CapacityShock(0.5, sector="steel")]),
            "unknown sector 'steel'.*raw",
        ),
        (
            lambda g: SupplyChain(1.0, 1.0, shocks=[CapacityShock(0.5, firms=[2, 6])]),
            "firm id 6 is outside \\[0, 6\\)",
        ),
        (lambda g: SupplyChain(1.0, 1.0, relation="contact"), "unknown relation"),
        (lambda g: SupplyChain(1.0, 1.0, sector_attr="industry"), "no 'industry' attribute"),
    ],
)
def test_bad_parameters_raise_clear_errors(build, match):
    graph = firm_network([2, 2, 2], TABLE, sector_names=NAMES)
    with pytest.raises(ValueError, match=match):
        simulate(build(graph), graph, 2)


def test_bad_runs_and_shocks_raise_clear_errors():
    graph = firm_network([2, 2, 2], TABLE, sector_names=NAMES)
    chain = SupplyChain(1.0, 1.0)
    with pytest.raises(ValueError, match="no initial_infected"):
        simulate(chain, graph, 2, initial_infected=3)
    with pytest.raises(ValueError, match="deterministic"):
        simulate(chain, graph, 2, replicates=4)
    state = chain.steady_state(graph)
    with pytest.raises(
        ValueError, match="'orders' must be a floating tensor \\[N, K\\] = \\[6, 3\\]"
    ):
        simulate(chain, graph, 2, state={**state, "orders": state["orders"][:, :2]})
    with torch.no_grad():
        chain.capacity.fill_(-1.0)  # e.g. an optimiser step too far: caught at the next run
    with pytest.raises(ValueError, match="capacity must be finite and >= 0"):
        simulate(chain, graph, 2)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        CapacityShock(1.5, firms=[0])
    with pytest.raises(ValueError, match="exactly one of"):
        CapacityShock(0.5)
    with pytest.raises(ValueError, match="one value per firm"):
        CapacityShock(torch.tensor([0.1, 0.2]), firms=[0, 1, 2])
    with pytest.raises(ValueError, match="end must be a time after"):
        CapacityShock(0.5, firms=0, start=5, end=5)
    # a cycle with coefficients 1 has no steady state (not a productive economy)
    loop = firm_graph(torch.tensor([[0, 1], [1, 0]]), [0, 1])
    with pytest.raises(ValueError, match="productive economy"):
        simulate(SupplyChain(1.0, 1.0, backend="native"), loop, 2)


def test_learnable_false_registers_buffers_and_state_dict_round_trips():
    chain = SupplyChain(torch.ones(6), 0.5, 3.0, 2.0, learnable=False)
    assert not list(chain.parameters())
    assert set(chain.state_dict()) == {
        "capacity",
        "final_demand",
        "target_inventory",
        "adjustment_time",
    }
    other = SupplyChain(torch.zeros(6), 0.0, 1.0, 1.0, learnable=False)
    other.load_state_dict(chain.state_dict())
    assert float(other.target_inventory) == 3.0 and other.capacity.tolist() == [1.0] * 6
