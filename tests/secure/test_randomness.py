"""The secure layer's randomness: a ChaCha20 keystream checked against an independent
implementation and RFC 8439, keys from OS entropy by default, and the attacks that seeded
generators allowed (replaying the dealer, searching for the seed, reusing material across
sessions) as tests."""

from __future__ import annotations

import pickle
import struct
import warnings

import pytest
import torch
from scipy import stats

from lpm_graph.protocols import SIR
from lpm_graph.secure import ProtocolInputs, launch
from lpm_graph.secure.dealer import Dealer
from lpm_graph.secure.prg import (
    InsecureRandomnessWarning,
    KeyStream,
    KeyStreams,
    OwnerRandomness,
    Randomness,
    derive_key,
)
from lpm_graph.secure.session import Session


def sir_inputs(n, initial_infected, **kwargs):
    """The private inputs of an SIR run (its initial state and draws)."""
    return ProtocolInputs(SIR(0.1, 0.1), n, initial_infected, **kwargs)


MASK = 0xFFFFFFFF


def _chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """RFC 8439 section 2.3, written from the RFC's description (not from the library)."""

    def rotl(v: int, c: int) -> int:
        return ((v << c) & MASK) | (v >> (32 - c))

    def quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & MASK
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & MASK
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & MASK
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & MASK
        s[b] = rotl(s[b] ^ s[c], 7)

    constants = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    state = constants + list(struct.unpack("<8L", key)) + [counter]
    state += list(struct.unpack("<3L", nonce))
    work = list(state)
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15)):
            quarter(work, a, b, c, d)
        for a, b, c, d in ((0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
            quarter(work, a, b, c, d)
    return struct.pack("<16L", *((w + s) & MASK for w, s in zip(work, state)))


def test_keystream_is_chacha20_from_the_rfc():
    # RFC 8439, appendix A.1, test vector 1: zero key, zero nonce, block counter 0
    rfc = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )
    assert KeyStream(bytes(32)).bytes(64).numpy().tobytes() == rfc
    key = bytes(range(32))
    expected = b"".join(_chacha20_block(key, block, bytes(12)) for block in range(3))
    stream = KeyStream(key)
    got = stream.bytes(100).numpy().tobytes() + stream.bytes(92).numpy().tobytes()
    assert got == expected  # in order across calls, counter from 0
    words = KeyStream(key).words((24,))
    assert words.tolist() == list(struct.unpack("<24q", expected))  # little-endian int64


def test_words_are_uniform_on_the_ring():
    words = KeyStream(bytes(range(32))).words((200_000,))
    for shift in (0, 23, 56):  # low, middle and top bytes
        byte = torch.bitwise_right_shift(words, shift) & 0xFF
        counts = torch.bincount(byte, minlength=256).numpy()
        assert stats.chisquare(counts).pvalue > 1e-4
    u = KeyStream(bytes(32)).uniform((100_000,))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-4


def test_derived_keys_differ_by_label_and_master():
    master = bytes(range(32))
    keys = {derive_key(master, "dealer"), derive_key(master, "session"),
            derive_key(master, "draw", "sir", 0), derive_key(master, "draw", "sir", 1),
            derive_key(bytes(32), "dealer")}  # fmt: skip
    assert len(keys) == 5 and all(len(k) == 32 for k in keys)
    with pytest.raises(ValueError, match="0x1f"):
        derive_key(master, "a\x1fb")


def test_keys_are_never_pickled():
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(KeyStream(bytes(32)))
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(KeyStreams(bytes(32)))
    owner = sir_inputs(100, initial_infected=5)
    first = owner("draw:sir:", 0)[0]
    copy = pickle.loads(pickle.dumps(owner))  # e.g. sent to another process
    assert copy.randomness._keys is None
    assert not torch.equal(copy("draw:sir:", 0)[0], first)  # the copy cannot redo the draws
    assert torch.equal(owner("draw:sir:", 0)[0], first)  # the owner's own draws stay fixed


def test_default_sessions_share_nothing():
    """Finding 4: two sessions with the same inputs reused every share; now the difference of
    a party's shares of the same value in two sessions is uniform, not the difference of the
    secrets, and no two dealers make the same triple."""
    x = torch.arange(20_000, dtype=torch.float64)
    a, b = Session(2), Session(2)
    difference = a.share(x).shares[0] - b.share(x).shares[0]
    top = torch.bitwise_right_shift(difference, 56) & 0xFF
    assert stats.chisquare(torch.bincount(top, minlength=256).numpy()).pvalue > 1e-4
    t1, t2 = Dealer(2).triple((1000,)), Dealer(2).triple((1000,))
    assert not torch.equal(t1["a"], t2["a"])


def test_there_is_no_seed_to_search_for():
    """Finding 1: with a seed (default 0) any party could rebuild the dealer and replay it.
    A default dealer's triples match no seeded dealer's."""
    row = Dealer(2).triple((64,))["a"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRandomnessWarning)
        for seed in range(200):
            assert not torch.equal(Dealer(2, seed=seed).triple((64,))["a"][1], row)


def test_reproducible_mode_repeats_itself_and_warns():
    with pytest.warns(InsecureRandomnessWarning, match="NOT private"):
        a = Dealer(2, seed=3).triple((8,))
    with pytest.warns(InsecureRandomnessWarning):
        b = Dealer(2, seed=Randomness.reproducible(3)).triple((8,))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.warns(InsecureRandomnessWarning):
        owner = OwnerRandomness(5)
    assert owner.streams().__class__.__name__ == "RandomStreams"  # the plaintext run's draws
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureRandomnessWarning)
        Session(2)  # the default never warns
        sir_inputs(10, 1)
    with pytest.raises(TypeError, match="int"):
        Randomness.reproducible("3")  # type: ignore[arg-type]


def _never_runs(session):  # pragma: no cover - launch refuses before starting processes
    raise AssertionError("launch started processes")


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": 0}, {"owner": "seeded"}],
    ids=["dealer seed", "owner seed"],
)
def test_launch_refuses_seeded_randomness_unless_forced(kwargs):
    if kwargs.get("owner") == "seeded":
        with pytest.warns(InsecureRandomnessWarning):
            kwargs = {"owner": sir_inputs(10, 1, seed=0)}
    with pytest.raises(ValueError, match="force_insecure=True"):
        launch(_never_runs, 2, **kwargs)


class _Canary:
    """An owner holding a secret that no party may receive."""

    SECRET = "canary-5f0c2a91"

    def __init__(self) -> None:
        self.secret = self.SECRET
        self.inner = sir_inputs(40, initial_infected=torch.tensor([3, 17]))

    def __call__(self, name, step):
        return self.inner(name, step)


def _inspect_process(session):
    """A curious party: everything reachable in its process (its stack's frames, the garbage
    collector's objects) searched for the owner."""
    import gc
    import inspect

    found = [type(o).__name__ for o in gc.get_objects()
             if isinstance(o, (_Canary, ProtocolInputs, OwnerRandomness, KeyStreams))]  # fmt: skip
    for frame in inspect.stack():
        for value in frame.frame.f_locals.values():
            if _Canary.SECRET in repr(value):
                found.append(f"frame {frame.function}")
    shared = session.input("initial_infected")  # the owner's input reaches it only as shares
    return found, shared.shares.shape


def test_a_party_process_receives_no_owner():
    """Finding 2: launch pickled the owner into every party's process, where a party function
    could read it from its own stack. Now only the owner's own process gets it
    (tests/secure/test_roles.py checks every role's process)."""
    results = launch(_inspect_process, 2, owner=_Canary(), timeout=120)
    for found, shape in results:
        assert found == [] and tuple(shape) == (1, 40)


def test_a_stream_moves_to_derived_keys_instead_of_running_out(monkeypatch):
    """The dealer keeps one stream for a whole run: past an epoch it continues under a key
    derived from its own, never exhausting ChaCha20's block counter."""
    from lpm_graph.secure import prg

    monkeypatch.setattr(prg, "EPOCH_BYTES", 128)
    key = bytes(range(32))
    got = KeyStream(key).bytes(300).numpy().tobytes()
    second = derive_key(key, "epoch", 1)
    third = derive_key(key, "epoch", 2)
    expected = (
        b"".join(_chacha20_block(key, b, bytes(12)) for b in range(2))
        + b"".join(_chacha20_block(second, b, bytes(12)) for b in range(2))
        + _chacha20_block(third, 0, bytes(12))[:44]
    )
    assert got == expected


def test_a_forked_copy_of_a_stream_refuses():
    import os

    stream = KeyStream(bytes(32))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy must not repeat the parent's words
        try:
            stream.words((4,))
            os.write(write, b"read")
        except RuntimeError:
            os.write(write, b"refused")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"refused"
    assert stream.words((4,)).numel() == 4  # the parent's own stream still works


def test_float32_uniforms_stay_below_one():
    u = KeyStream(bytes(range(32))).uniform((200_000,), torch.float32)
    assert float(u.max()) < 1.0 and float(u.min()) >= 0.0


def test_default_keys_come_from_os_entropy(monkeypatch):
    """A default dealer's key is os.urandom's, not a seed: with a predictable 'entropy'
    source two default dealers agree, so nothing else feeds their keys."""
    from lpm_graph.secure import prg

    calls = []

    def fake_urandom(n):
        calls.append(n)
        return bytes(n)

    monkeypatch.setattr(prg.os, "urandom", fake_urandom)
    a, b = Dealer(2).triple((16,)), Dealer(2).triple((16,))
    assert calls and torch.equal(a["a"], b["a"])  # both keyed by the (fake) entropy alone
    owner = sir_inputs(10, 1)
    first = owner("draw:sir:", 0)[0]
    assert torch.equal(sir_inputs(10, 1)("draw:sir:", 0)[0], first)  # owners' keys too


def test_a_seed_is_never_positional():
    """Dealer(2, 0) or ProtocolInputs(protocol, n, k, 0) would select the insecure
    reproducible mode by accident: the seed is keyword-only."""
    with pytest.raises(TypeError):
        Dealer(2, 0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ProtocolInputs(SIR(0.1, 0.1), 10, 1, 0)  # type: ignore[misc]
