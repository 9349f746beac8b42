"""Known-answer vectors: encoding, a Beaver product, a truncation and a comparison on fixed
shares and fixed dealer material, each checked share by share against a hand computation
(written out in the comments), not against the code's own formulas."""

from __future__ import annotations

import torch

from lpm_graph.secure import LeakagePolicy, Session, SharedTensor, decode, encode
from lpm_graph.secure.session import Transport
from lpm_graph.secure.tensor import greater, multiply, truncate


class Scripted(Transport):
    """Two parties in this process; the dealer's items come from a script (a dict of
    ``[2, ...]`` int64 parts per kind); kinds not scripted are all zeros (no masking)."""

    parties, local = 2, (0, 1)

    def __init__(self, script: dict[str, dict[str, list[int]]]) -> None:
        self.script = script

    def exchange(self, tensors):
        return list(tensors)

    def correlation(self, kind, shape, **kwargs):
        if kind in self.script:
            return {k: torch.tensor(v, dtype=torch.int64).view(2, *shape)
                    for k, v in self.script[kind].items()}  # fmt: skip
        names = {"binary_triple": "abc", "bit": ("binary", "arithmetic")}[kind]
        return {k: torch.zeros((2, *shape), dtype=torch.int64) for k in names}

    def pairwise_keys(self, make_key):
        return {(0, 1): make_key(0, 1)}


def _session(script) -> Session:
    return Session(transport=Scripted(script), policy=LeakagePolicy(outputs=True))


def test_encoding_vectors():
    # 1.5 * 2^16 = 98304; -0.25 * 2^16 = -16384; 2^-17 rounds half to even: 0; 3 * 2^-17: 2
    got = encode(torch.tensor([1.5, -0.25, 2.0**-17, 3 * 2.0**-17]), 16)
    assert got.tolist() == [98304, -16384, 0, 2]
    assert encode(torch.tensor([1, 0, -3]), 16).tolist() == [65536, 0, -196608]  # exact ints
    assert decode(torch.tensor([65537, -1]), 16).tolist() == [1 + 2.0**-16, -(2.0**-16)]
    assert encode(torch.tensor([True, False]), 0).tolist() == [1, 0]


def test_beaver_product_vector():
    # x = 7 as shares (5, 2); y = 3 as (10, -7); triple a = 2 (1, 1), b = 4 (2, 2),
    # c = 8 (3, 5). Opened e = x - a = 5, f = y - b = -1.
    # party 0: c0 + e b0 + f a0 + e f = 3 + 10 - 1 - 5 = 7
    # party 1: c1 + e b1 + f a1       = 5 + 10 - 1     = 14      (7 + 14 = 21 = 7 * 3)
    session = _session({"triple": {"a": [1, 1], "b": [2, 2], "c": [3, 5]}})
    x = SharedTensor(torch.tensor([[5], [2]]), 0, session)
    y = SharedTensor(torch.tensor([[10], [-7]]), 0, session)
    z = multiply(x, y)
    assert z.shares.flatten().tolist() == [7, 14]
    assert session.audit.kinds()["beaver_mask"] == 2


def test_truncation_vector():
    # x = 3 * 2^32 + 12345 (scale 32) as shares (x - 1000, 1000); dealer r = 2^40 + 7 as
    # (r - 5, 5), r >> 16 = 2^24 as (2^24 - 3, 3), msb(r) = 0 as (0, 0).
    # Opened c = x + 2^62 + r; c >> 16 = 3 * 2^16 + 2^46 + 2^24 (12345 + 7 < 2^16).
    # party 0: -(2^24 - 3) + (c >> 16) - 2^46 = 3 * 2^16 + 3 = 196611; party 1: -3.
    x_value, r = 3 * 2**32 + 12345, 2**40 + 7
    session = _session({"truncation": {"r": [r - 5, 5], "shifted": [2**24 - 3, 3], "msb": [0, 0]}})
    x = SharedTensor(torch.tensor([[x_value - 1000], [1000]]), 32, session)
    out = truncate(x, 16)
    assert out.frac_bits == 16
    assert out.shares.flatten().tolist() == [196611, -3]  # 3.0 at scale 16, floor
    assert decode(out.shares.sum(0), 16).item() == 3.0


def test_comparison_vectors():
    # With all-zero dealer material (no masking) a comparison opens its bit unmasked and
    # the result is shared as (bit, 0): 5 > 3 gives (1, 0), 2 > 3 gives (0, 0), -1 > -2
    # gives (1, 0), and 3 > 3 gives (0, 0).
    session = _session({})
    x = SharedTensor(torch.tensor([[5, 2, -1, 3], [0, 0, 0, 0]]), 0, session)
    y = SharedTensor(torch.tensor([[1, 1, -1, 1], [2, 2, -1, 2]]), 0, session)
    bits = greater(x, y)
    assert bits.shares.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0]]
