"""Secure message passing: private agents' states as additive secret shares.

``K >= 2`` non-colluding parties hold additive shares (in the ring of 64-bit integers) of the
private node states, which reach them only as shares from the agents' data owners; the
topology and the parameters are public. Sum aggregation runs on each
party's shares with no communication; products of private values use Beaver triples from a
dealer; an infection draw is one secure comparison ``lambda_i > E_i`` against the agent's
private ``E_i ~ Exp(1)``. Any protocol written to the step contract runs on shares with
:func:`secure_simulate` (its phases unchanged: the operation vocabulary of a phase is
implemented once, in :mod:`lpm_graph.secure.values`). Only declared aggregates, masks
(uniformly random), the loss and
gradients are ever opened, all through :meth:`Session.reveal` / :meth:`Session.open_raw`,
which record them in the session's :class:`AuditLog`.

Randomness (shares, triples, masks, owners' draws) comes from ChaCha20 keystreams under keys
each role draws from OS entropy (:class:`Randomness`); a seeded, reproducible mode exists for
tests and warns with :class:`InsecureRandomnessWarning`.
"""

from .audit import KINDS, AuditLog, Opening
from .dealer import Dealer
from .distributed import DistributedTransport, launch, session_from_env
from .layers import SecureProtocolLayer, secure_propagate
from .owner import DataOwner
from .policy import GaussianDP, InsecureDebugWarning, LeakageError, LeakagePolicy
from .prg import InsecureRandomnessWarning, KeyStream, OwnerRandomness, Randomness
from .program import ProtocolInputs, SecureContext, SecureTrajectory, secure_simulate
from .ring import FRAC_BITS, decode, encode
from .session import (
    CostReport,
    LocalTransport,
    OutputShares,
    Session,
    StepCost,
    Transport,
    receive,
)
from .tensor import SharedTensor, exp_neg, greater, is_shared, multiply
from .values import Private

__all__ = [
    "FRAC_BITS",
    "KINDS",
    "AuditLog",
    "CostReport",
    "DataOwner",
    "Dealer",
    "DistributedTransport",
    "GaussianDP",
    "InsecureDebugWarning",
    "InsecureRandomnessWarning",
    "KeyStream",
    "LeakageError",
    "LeakagePolicy",
    "LocalTransport",
    "Opening",
    "OutputShares",
    "OwnerRandomness",
    "Randomness",
    "Private",
    "ProtocolInputs",
    "SecureContext",
    "SecureProtocolLayer",
    "SecureTrajectory",
    "Session",
    "SharedTensor",
    "StepCost",
    "Transport",
    "decode",
    "encode",
    "exp_neg",
    "greater",
    "is_shared",
    "launch",
    "receive",
    "multiply",
    "secure_propagate",
    "secure_simulate",
    "session_from_env",
]
