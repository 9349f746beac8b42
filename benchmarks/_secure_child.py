"""One secure run in a process of its own, for ``benchmarks/secure.py``: imports whichever
``lpm_graph`` is first on ``PYTHONPATH`` (this checkout's or an older one's), so the same
code times two versions. Uses ``launch(party, parties=2, owner=..., args=..., timeout=...)``
with each version's default randomness, and each version's way of running a protocol on
shares: ``secure_simulate`` with ``ProtocolInputs`` (any protocol), or, in versions before
it, ``secure_sir`` / ``secure_seirm`` with ``SIRInputs`` / ``SEIRMInputs``.

    python benchmarks/_secure_child.py MODEL AGENTS DEGREE STEPS  ->  one JSON line
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch

TAU, GAMMA = 0.06, 0.1
MORTALITY = (0.0, 0.005, 0.01, 0.03, 0.06, 0.12, 0.25, 0.4)


def protocol(model: str):
    from lpm_graph.protocols import SEIRM, SIR

    if model == "sir":
        return SIR(TAU, GAMMA, learnable=False)
    mortality = torch.tensor(MORTALITY, dtype=torch.float64)
    return SEIRM(torch.tensor(1.8, dtype=torch.float64), mortality, learnable=False)


def population(model: str, agents: int, degree: float, seed: int = 0):
    """SIR: G(n, m) with mean degree ``degree``; SEIRM: a synthetic population (households,
    schools, workplaces, community; ages)."""
    from lpm_graph.datasets import SyntheticPopulation
    from lpm_graph.datasets.generators import erdos_renyi

    if model == "sir":
        return erdos_renyi(agents, degree, seed=seed)
    return SyntheticPopulation(agents, seed=seed)[0]


def _runner(model: str):
    """``run(protocol, graph, steps, session)`` of this version of the library."""
    try:
        from lpm_graph.secure import secure_simulate

        return secure_simulate
    except ImportError:  # versions before the generic program
        from lpm_graph.secure import secure_seirm, secure_sir

        return secure_sir if model == "sir" else secure_seirm


def owner(model: str, agents: int, initial_infected: int):
    """The data owner's private inputs in this version of the library."""
    try:
        from lpm_graph.secure import ProtocolInputs

        return ProtocolInputs(protocol(model), agents, initial_infected)
    except ImportError:
        from lpm_graph.secure import SEIRMInputs, SIRInputs

        if model == "sir":
            return SIRInputs(agents, initial_infected)
        return SEIRMInputs(protocol(model), agents, initial_infected)


def party(session, model: str, agents: int, degree: float, steps: int) -> dict:
    graph = population(model, agents, degree)
    start = time.perf_counter()
    run = _runner(model)(protocol(model), graph, steps, session)
    seconds = time.perf_counter() - start
    per_step = [s for s in session.cost.steps if isinstance(s.step, int)]
    return {
        "seconds": seconds,
        "final_R": float(run.counts["R"][-1]),
        "step_bytes": [s.bytes_per_party for s in per_step],
        "step_dealer": [s.dealer_bytes for s in per_step],
        "step_owner": [getattr(s, "owner_bytes", 0) for s in per_step],
        "rounds": session.cost.rounds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    import lpm_graph
    from lpm_graph.secure import launch

    model, agents, degree, steps = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    start = time.perf_counter()
    results = launch(party, parties=2, owner=owner(model, agents, 20),
                     args=(model, agents, degree, steps),
                     timeout=3600)  # fmt: skip
    total = time.perf_counter() - start
    out = {**results[0], "launch_seconds": total, "version": lpm_graph.__file__,
           "peak_rss_mib_parties": [r["peak_rss_mib"] for r in results]}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
