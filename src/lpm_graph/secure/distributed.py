"""One role per process, over ``torch.distributed``: the transport of a compute party, the
dealer's and the data owners' loops, and a launcher.

World layout: ranks ``0 .. K-1`` are the compute parties, rank ``K`` is the dealer and ranks
``K+1 .. K+M`` are the ``M`` data owners. The parties exchange shares in a process group of
their own (neither the dealer nor an owner is in it); the dealer and each owner talk to each
party point to point and send party ``i`` its own shares and nothing else. No role's process
receives another role's key, and among the roles only an owner's process holds its
plaintext inputs (with :func:`launch`, the calling process builds the owners, so it holds
them too: see ``SECURITY.md``).

At the start every owner sends each party the public part of its description (which agents
it speaks for, the population size), so that the parties know where its shares go.

A request for correlated randomness (to the dealer) or a private input (to every owner):

1. Every party makes the same calls in the same order (SPMD). Party 0 sends the request: a
   small int64 tensor with the operation, the kind or input name, the shape and the integer
   keyword arguments (all public: the same for every party).
2. The dealer makes the item with :meth:`Dealer.make`; an owner shares its input with
   :meth:`OwnerRole.share <lpm_graph.secure.owner.OwnerRole.share>` (the same classes and
   order of requests as :class:`~lpm_graph.secure.LocalTransport`, hence, with a reproducible
   seed, the same shares).
3. It sends party ``i``, in one message, a header (fractional bits, names and shapes of the
   parts) and its row ``[1, *shape]`` of every part. If making the item failed, the header
   carries only the exception's type (its message may quote a private input, e.g. a value too
   large for the ring), every party raises, the role logs the traceback and goes on serving.

Threat model: semi-honest parties, dealer and owners; the dealer colludes with no party.
Channels are plain TCP (gloo) or NCCL: run on a trusted network or loopback (see
``SECURITY.md`` for separate hosts).

Every message is a 1-D int64 tensor sent as its length, then itself (two ``send`` calls).
"""

from __future__ import annotations

import logging
import operator
import os
import pickle
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from .dealer import Dealer
from .owner import (
    DataOwner,
    InputOwner,
    OwnerRole,
    as_owners,
    check_partition,
    combine_inputs,
)
from .policy import LeakagePolicy
from .prg import KEY_BYTES, Randomness, as_randomness
from .ring import FRAC_BITS
from .session import Session, Transport

__all__ = ["DistributedTransport", "launch", "serve_dealer", "serve_owner", "session_from_env"]

_log = logging.getLogger(__name__)

_CORRELATION, _INPUT, _STOP = 1, 2, 3  # request operations
_OK, _FAILED = 0, 1  # answer status


# ---------------------------------------------------------------------- messages
def _words(*items: int | str | Sequence[int]) -> list[int]:
    """Ints as they are; strings as their length and UTF-8 bytes; sequences as length and ints."""
    out: list[int] = []
    for item in items:
        if isinstance(item, str):
            item = list(item.encode())
        if isinstance(item, Sequence):
            out += [len(item), *(int(v) for v in item)]
        else:
            out.append(int(item))
    return out


class _Reader:
    """Reads back what :func:`_words` wrote, in order."""

    def __init__(self, words: list[int]) -> None:
        self.words, self.at = words, 0

    def int(self) -> int:
        self.at += 1
        return self.words[self.at - 1]

    def ints(self) -> list[int]:
        n = self.int()
        self.at += n
        return self.words[self.at - n : self.at]

    def str(self) -> str:
        return bytes(self.ints()).decode()


def _send(message: Tensor, dst: int) -> None:
    dist.send(torch.tensor([message.numel()]), dst)
    dist.send(message, dst)


def _recv(src: int) -> Tensor:
    size = torch.empty(1, dtype=torch.int64)
    dist.recv(size, src)
    message = torch.empty(int(size), dtype=torch.int64)
    dist.recv(message, src)
    return message


def _with_header(header: list[int], payload: Tensor | None = None) -> Tensor:
    head = torch.tensor([len(header), *header], dtype=torch.int64)
    return head if payload is None else torch.cat([head, payload])


# ---------------------------------------------------------------------- parties
class DistributedTransport(Transport):
    """The transport of one compute party in its own process.

    Needs an initialised default process group of ``parties + 1 + owners`` ranks (rank
    ``parties`` is the dealer running :func:`serve_dealer`, the ranks after it the data
    owners running :func:`serve_owner`). Made by :func:`launch` and :func:`session_from_env`.

    Args:
        parties: number of compute parties ``K``.

    Shapes:
        :meth:`exchange` takes ``[1, *shape]`` (this party's share) and returns ``[K, *shape]``;
        :meth:`correlation` and :meth:`input` return ``[1, *shape]``.
    """

    def __init__(self, parties: int) -> None:
        if not dist.is_initialized():
            raise RuntimeError("DistributedTransport needs torch.distributed initialised.")
        rank, world = dist.get_rank(), dist.get_world_size()
        if world < parties + 1 or rank >= parties:
            raise ValueError(
                f"rank {rank} of {world} is not a party of {parties} (ranks 0..{parties - 1} "
                f"are the parties, rank {parties} the dealer, the ranks after it the owners)."
            )
        self.parties = parties
        self.rank = rank
        self.local = (rank,)
        self.dealer = parties  # the dealer's rank
        self.owner_ranks = tuple(range(parties + 1, world))
        # only the parties make (and are in) this group: no other role sees their exchanges
        self.group = dist.new_group(list(range(parties)), use_local_synchronization=True)
        self._dealt = 0
        self._owned = 0
        self._closed = False
        # each owner's public description: which agents it speaks for (or all)
        self._owner_publics = [_read_owner_hello(_recv(r)) for r in self.owner_ranks]
        check_partition(self._owner_publics)  # an owner may not claim another's agents

    def exchange(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """All tensors in one ``all_gather``: their bytes in one buffer, whatever the dtypes."""
        for t in tensors:
            if t.shape[:1] != (1,):
                raise ValueError(f"exchange takes this party's row [1, ...], got {tuple(t.shape)}.")
        if not tensors:
            return []
        rows = [t.contiguous().view(torch.uint8).reshape(-1) for t in tensors]
        mine = torch.cat(rows)  # [B] bytes
        everyone = torch.empty((self.parties, mine.numel()), dtype=torch.uint8, device=mine.device)
        if mine.numel():
            dist.all_gather(list(everyone.unbind(0)), mine, group=self.group)  # [K, B]
        out, start = [], 0
        for t, row in zip(tensors, rows):
            # a fresh copy: viewing bytes as a wider dtype needs an aligned storage offset
            chunk = everyone[:, start : start + row.numel()].clone(
                memory_format=torch.contiguous_format
            )
            out.append(chunk.view(t.dtype).reshape(self.parties, *t.shape[1:]))
            start += row.numel()
        return out

    def correlation(self, kind: str, shape: tuple[int, ...], **kwargs) -> dict[str, Tensor]:
        extra: list[int | str] = []
        for key, value in sorted(kwargs.items()):
            try:
                extra += [key, operator.index(value)]
            except TypeError:
                raise TypeError(
                    f"correlation keyword {key}={value!r}: only integers travel."
                ) from None
        request = _words(_CORRELATION, kind, shape, len(kwargs), *extra)
        parts, _, size = self._ask(self.dealer, request, f"{kind!r} of shape {tuple(shape)}")
        self._dealt += size
        return parts

    def input(self, name: str, step: int | None) -> tuple[Tensor, int]:
        if not self.owner_ranks:
            raise RuntimeError(
                f"private input {name!r} was requested but the run has no data owner; pass "
                "owner= or owners= to launch / session_from_env."
            )
        request = _words(_INPUT, name, step is not None, step or 0)
        parts, bits = [], set()
        for rank, (agents, n) in zip(self.owner_ranks, self._owner_publics):
            what = f"private input {name!r} at step {step}"
            got, b, size = self._ask(rank, request, what)
            self._owned += size
            parts.append((got["shares"], agents, n))
            bits.add(b)
        return combine_inputs(parts, bits, name)

    def pairwise_keys(self, make_key: Callable[[int, int], bytes]) -> dict[tuple[int, int], bytes]:
        """For each pair ``i < j`` in order, party ``i`` sends the key it makes to party
        ``j`` point to point (no other process sees it)."""
        keys = {}
        for i in range(self.parties):
            for j in range(i + 1, self.parties):
                if self.rank == i:
                    key = make_key(i, j)
                    dist.send(torch.frombuffer(bytearray(key), dtype=torch.uint8), j)
                    keys[(i, j)] = key
                elif self.rank == j:
                    got = torch.empty(KEY_BYTES, dtype=torch.uint8)
                    dist.recv(got, i)
                    keys[(i, j)] = bytes(got.tolist())
        return keys

    def _ask(self, role: int, request: list[int], what: str) -> tuple[dict[str, Tensor], int, int]:
        """Party 0 sends ``request`` to rank ``role``; every party receives its row of the
        answer: ``(parts, fractional bits, payload bytes)``."""
        if self._closed:
            raise RuntimeError("the transport is closed.")
        if self.rank == 0:
            _send(torch.tensor(request, dtype=torch.int64), role)
        message = _recv(role)
        size = int(message[0])
        header, payload = _Reader(message[1 : size + 1].tolist()), message[size + 1 :]
        if header.int() == _FAILED:
            raise RuntimeError(
                f"{_who(role, self.parties)} could not make {what}: {header.str()} (the "
                "traceback is in that role's log only: its message may quote private inputs)."
            )
        bits = header.int()
        parts, start = {}, 0
        for _ in range(header.int()):
            name, shape = header.str(), tuple(header.ints())
            numel = int(torch.Size(shape).numel())
            parts[name] = payload[start : start + numel].view(shape)
            start += numel
        if start != payload.numel():
            raise RuntimeError(f"party {self.rank} received shares the header does not describe.")
        self._check_own_rows(parts)
        return parts, bits, payload.numel() * payload.element_size()

    def _check_own_rows(self, parts: dict[str, Tensor]) -> None:
        """A party process holds its own row of shares and no other party's."""
        for name, part in parts.items():
            if part.shape[:1] != (1,):
                raise RuntimeError(
                    f"party {self.rank} received {name!r} with shape {tuple(part.shape)}; a party "
                    "process must receive exactly its own row [1, ...] of shares."
                )

    def owner_agents(self) -> list[Tensor | None]:
        return [agents for agents, _ in self._owner_publics]

    def dealer_bytes(self) -> int:
        """Bytes of shares this party received from the dealer (headers not counted)."""
        return self._dealt

    def owner_bytes(self) -> int:
        """Bytes of shares this party received from the data owners (headers not counted)."""
        return self._owned

    def close(self) -> None:
        """Tell the dealer and the owners to stop (party 0) and destroy this process's
        process groups."""
        if self._closed:
            return
        self._closed = True
        if self.rank == 0:
            for role in (self.dealer, *self.owner_ranks):
                _send(torch.tensor([_STOP]), role)
        dist.destroy_process_group()


def _owner_hello(owner: DataOwner) -> Tensor:
    """The public description of an owner, as it sends it to every party at the start."""
    agents, n = owner.public()
    if agents is None:
        return torch.tensor([0], dtype=torch.int64)
    return torch.cat([torch.tensor([1, n], dtype=torch.int64), agents.to(torch.int64).cpu()])


def _read_owner_hello(message: Tensor) -> tuple[Tensor | None, int | None]:
    if int(message[0]) == 0:
        return None, None
    return message[2:].clone(), int(message[1])


# ---------------------------------------------------------------------- dealer and owners
def _serve(parties: int, handle: Callable[[int, _Reader], tuple[dict[str, Tensor], int]]) -> None:
    """Answer party 0's requests until it says stop; each party gets its own rows."""
    while True:
        request = _Reader(_recv(0).tolist())
        op = request.int()
        if op == _STOP:
            return
        try:
            parts, bits = handle(op, request)
            for name, part in parts.items():
                if part.dtype != torch.int64 or part.shape[:1] != (parties,):
                    raise TypeError(f"{name}: a role sends [parties, ...] int64 shares.")
        except Exception as error:
            _log.exception("could not serve a request")
            failed = _with_header(_words(_FAILED, type(error).__name__))
            for party in range(parties):
                _send(failed, party)
            continue
        header = [_OK, bits, len(parts)]
        for name, part in parts.items():
            header += _words(name, (1, *part.shape[1:]))
        for party in range(parties):
            payload = torch.cat([part[party].reshape(-1).cpu() for part in parts.values()])
            _send(_with_header(header, payload), party)


def serve_dealer(dealer: Dealer) -> None:
    """Answer the parties' requests for correlated randomness until party 0 says stop (run
    on rank ``dealer.parties``)."""
    parties = dealer.parties
    if dist.get_rank() != parties or dist.get_world_size() < parties + 1:
        raise ValueError(
            f"the dealer of {parties} parties runs on rank {parties}, not on rank "
            f"{dist.get_rank()} of {dist.get_world_size()}."
        )

    def handle(op: int, request: _Reader) -> tuple[dict[str, Tensor], int]:
        if op != _CORRELATION:
            raise ValueError(f"the dealer serves correlated randomness only, not request {op}.")
        kind, shape = request.str(), tuple(request.ints())
        kwargs = {}
        for _ in range(request.int()):
            key = request.str()
            kwargs[key] = request.int()
        return dealer.make(kind, shape, **kwargs), 0

    _serve(parties, handle)


def serve_owner(role: OwnerRole) -> None:
    """Send every party the owner's public description, then answer requests for its private
    inputs until party 0 says stop (run on a rank after the dealer's)."""
    parties = role.parties
    if dist.get_rank() <= parties:
        raise ValueError(
            f"a data owner runs on a rank after the {parties} parties and the dealer, not on "
            f"rank {dist.get_rank()}."
        )
    hello = _owner_hello(role.owner)
    for party in range(parties):
        _send(hello, party)

    def handle(op: int, request: _Reader) -> tuple[dict[str, Tensor], int]:
        if op != _INPUT:
            raise ValueError(f"a data owner serves private inputs only, not request {op}.")
        name, has_step, step = request.str(), request.int(), request.int()
        shares, bits = role.share(name, step if has_step else None)
        return {"shares": shares}, bits

    _serve(parties, handle)


# ---------------------------------------------------------------------- processes
@dataclass(frozen=True)
class _Setup:
    parties: int
    randomness: Randomness  # where each role's key comes from (drawn in its own process)
    owners: tuple[DataOwner, ...]  # in an owner's process: its own one; elsewhere none
    num_owners: int
    frac_bits: int
    timeout: float
    backend: str | None
    device: str | None
    owner_index: int = -1  # which owner this process is (owner processes only)
    policy: LeakagePolicy | None = None
    check_ranges: bool = False


def _connect(rank: int, setup: _Setup, store: dist.Store | None = None) -> Session | None:
    """Join the world; a party gets its :class:`Session`; the dealer and the owners serve
    and get ``None``."""
    dist.init_process_group(
        setup.backend or "gloo",
        init_method=None if store is not None else "env://",
        store=store,
        rank=rank,
        world_size=setup.parties + 1 + setup.num_owners,
        timeout=timedelta(seconds=setup.timeout),
    )
    if rank == setup.parties:
        serve_dealer(Dealer(setup.parties, seed=setup.randomness))
        dist.destroy_process_group()
        return None
    if rank > setup.parties:
        (owner,) = setup.owners
        index = rank - setup.parties - 1
        serve_owner(OwnerRole(owner, setup.parties, setup.frac_bits, setup.randomness, index))
        dist.destroy_process_group()
        return None
    device = torch.device(setup.device or "cpu")
    if device.type == "cuda" and device.index is None:  # one GPU per party (NCCL needs it)
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    transport = DistributedTransport(setup.parties)
    session = Session(
        seed=setup.randomness,
        frac_bits=setup.frac_bits,
        transport=transport,
        device=device,
        policy=setup.policy,
        check_ranges=setup.check_ranges,
    )
    if session.local != (rank,):
        raise RuntimeError(f"party {rank}'s session serves parties {session.local}, not ({rank},).")
    return session


def session_from_env(
    *,
    owners: Callable[[], object] | Sequence[Callable[[], object]] = (),
    seed: int | Randomness | None = None,
    frac_bits: int = FRAC_BITS,
    timeout: float = 600.0,
    backend: str | None = None,
    device: str | None = None,
    policy: LeakagePolicy | None = None,
    check_ranges: bool = False,
    force_insecure: bool = False,
) -> Session | None:
    """The session of this process when started by ``torchrun --nproc-per-node K+1+M``.

    Ranks ``0 .. K-1`` get their :class:`Session`. Rank ``K`` is the dealer and ranks
    ``K+1 .. K+M`` the data owners: they serve until the parties close their sessions and
    return ``None``.

    Every rank runs the same script, so an owner's private data must not be loaded by the
    script itself: ``owners`` holds one *factory* per owner, ``make() -> InputOwner |
    DataOwner``, called only in that owner's process (load the private data inside it).

    Args:
        owners: a factory, or one per data owner (``M`` = their number).
        seed: as in :func:`launch`.
        frac_bits: as in :func:`launch`.
        timeout: as in :func:`launch`.
        backend: as in :func:`launch`.
        device: as in :func:`launch`.
        policy: as in :func:`launch`.
        check_ranges: as in :func:`launch`.
        force_insecure: as in :func:`launch`.
    """
    factories = [owners] if callable(owners) else list(owners)
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    parties = world - 1 - len(factories)
    if parties < 2:
        raise ValueError(
            f"WORLD_SIZE={world} with {len(factories)} owners leaves {parties} compute "
            "parties; start K + 1 + M processes (K >= 2 parties, a dealer, M owners)."
        )
    randomness = _checked(seed, [], force_insecure, check_ranges)
    mine: tuple[DataOwner, ...] = ()
    if rank > parties:  # this process is an owner: only it builds its owner
        mine = tuple(as_owners(factories[rank - parties - 1](), None))
        _checked(seed, mine, force_insecure, check_ranges)
    setup = _Setup(
        parties, randomness, mine, len(factories), frac_bits, timeout, backend, device,
        owner_index=rank - parties - 1 if rank > parties else -1, policy=policy,
        check_ranges=check_ranges,
    )  # fmt: skip
    return _connect(rank, setup)


def _process(rank: int, port: int, setup: _Setup, fn: Callable, args: tuple, results) -> None:
    try:
        roles = setup.parties + 1 + setup.num_owners
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // roles))
        store = dist.TCPStore(
            "127.0.0.1", port, is_master=False, timeout=timedelta(seconds=setup.timeout)
        )
        session = _connect(rank, setup, store)
        if session is None:
            results.put((rank, True, None))
            return
        value = fn(session, *args)
        session.close()
        results.put((rank, True, pickle.dumps(value)))
    except Exception:
        results.put((rank, False, traceback.format_exc()))


def _checked(
    seed: int | Randomness | None,
    owners: Sequence[DataOwner],
    force_insecure: bool,
    check_ranges: bool = False,
) -> Randomness:
    """The run's randomness; reproducible (seeded) randomness, the roles' or an owner's
    draws', and the range-checking debug mode only with ``force_insecure``."""
    randomness = as_randomness(seed)
    if check_ranges and not force_insecure:
        raise ValueError(
            "check_ranges=True opens the inputs of every truncation and comparison, so the "
            "run would not be private; pass force_insecure=True only to debug a test run."
        )
    seeded = ["seed"] if randomness.is_reproducible else []
    for m, owner in enumerate(owners):
        r = getattr(owner.inputs, "randomness", None)  # ProtocolInputs: an OwnerRandomness
        r = getattr(r, "randomness", r)
        if isinstance(r, Randomness) and r.is_reproducible:
            seeded.append(f"owner {m}'s seed")
    if seeded and not force_insecure:
        raise ValueError(
            f"{' and '.join(seeded)} make the run's shares or private draws follow from a "
            "seed anyone may know or search for, so the run would not be private. Leave the "
            "seeds out (Session/launch seed=None, ProtocolInputs(..., seed=None)) for a private "
            "run; pass force_insecure=True only to compare with a plaintext run in a test."
        )
    return randomness


def _role_part(rank: int, setup: _Setup, fn: Callable, args: tuple) -> tuple:
    """``(setup, fn, args)`` as process ``rank`` receives them: a party and the dealer get no
    owner, an owner only its own one; only the parties get the party function."""
    if rank < setup.parties:
        return replace(setup, owners=()), fn, args
    if rank == setup.parties:
        return replace(setup, owners=()), None, ()
    index = rank - setup.parties - 1
    return replace(setup, owners=(setup.owners[index],), owner_index=index), None, ()


def _who(rank: int, parties: int) -> str:
    if rank < parties:
        return f"party {rank}"
    if rank == parties:
        return f"the dealer (rank {rank})"
    return f"data owner {rank - parties - 1} (rank {rank})"


def launch(
    fn: Callable[..., Any],
    parties: int = 2,
    *,
    seed: int | Randomness | None = None,
    owner: InputOwner | DataOwner | None = None,
    owners: Sequence[DataOwner] | None = None,
    frac_bits: int = FRAC_BITS,
    args: tuple = (),
    timeout: float = 600.0,
    backend: str | None = None,
    device: str | None = None,
    policy: LeakagePolicy | None = None,
    check_ranges: bool = False,
    force_insecure: bool = False,
) -> list:
    """Run ``fn(session, *args)`` in ``parties`` processes, one compute party each, with a
    dealer process and one process per data owner; return the parties' return values (party
    0 first). This process is the output receiver: it gets what the parties return.

    ``fn`` and the owners travel to the new processes by pickling: module-level functions or
    objects. Each process receives only its role's part: an owner's process its own owner,
    the parties ``fn`` and ``args``, the dealer neither. The processes are daemonic (``fn``
    cannot start processes of its own). Every party must make the same secure calls in the
    same order.

    Args:
        fn: the computation of one party, ``fn(session, *args) -> picklable value``.
        parties: number of compute parties ``K >= 2``.
        seed: ``None`` (default): every role draws its key from OS entropy in its own
            process. An int or :meth:`Randomness.reproducible
            <lpm_graph.secure.prg.Randomness.reproducible>`: the same shares as
            ``Session(parties, seed=seed)``, **not private**; refused unless
            ``force_insecure=True`` (tests).
        owner: one data owner for all agents: its private inputs (see
            :data:`~lpm_graph.secure.owner.InputOwner`) or a
            :class:`~lpm_graph.secure.DataOwner`.
        owners: several :class:`~lpm_graph.secure.DataOwner` objects that partition the
            agents, each in its own process.
        frac_bits: fractional bits of fixed-point values.
        args: more positional arguments of ``fn``.
        timeout: seconds any one communication may wait, the dealer's wait for the next
            request included (the process groups' timeout).
        backend: ``torch.distributed`` backend. Default ``"gloo"``: the dealer's messages
            and the parties' exchanges, CUDA shares staged through the host.
            ``"cpu:gloo,cuda:nccl"`` exchanges CUDA shares over NCCL, which needs one GPU per
            party (NCCL refuses two ranks on one device).
        device: where each party keeps its shares (default CPU; ``"cuda"``: one GPU per party).
        policy: the parties' :class:`~lpm_graph.secure.LeakagePolicy` (default
            ``LeakagePolicy()``).
        check_ranges: the range-checking debug mode of :class:`Session` (opens private
            values; refused unless ``force_insecure=True``).
        force_insecure: allow a reproducible ``seed`` or ``check_ranges`` (tests only).

    Raises:
        RuntimeError: as soon as a party, the dealer or an owner fails or dies, naming it,
            with its traceback; the other processes are terminated.
    """
    if parties < 2:
        raise ValueError(f"secret sharing needs at least 2 parties, got {parties}.")
    roles = as_owners(owner, owners)
    randomness = _checked(seed, roles, force_insecure, check_ranges)
    setup = _Setup(
        parties, randomness, tuple(roles), len(roles), frac_bits, timeout, backend, device,
        policy=policy, check_ranges=check_ranges,
    )  # fmt: skip
    # the store picks a free port itself (no race between choosing a port and binding it)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    context = mp.get_context("spawn")
    results = context.Queue()
    world = parties + 1 + len(roles)
    processes = [
        context.Process(
            target=_process,
            args=(rank, store.port, *_role_part(rank, setup, fn, args), results),
            name=_who(rank, parties),
            daemon=True,
        )
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    try:
        return _collect(processes, results, parties)
    finally:
        # everyone has reported, or one failed: give them a moment to exit, then end them
        deadline = time.monotonic() + 1.0
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join()


def _collect(processes: list, results, parties: int) -> list:
    """Wait for every process to report; raise at the first failure or silent death."""
    values: list = [None] * parties
    pending = set(range(len(processes)))
    while pending:
        try:
            rank, ok, payload = results.get(timeout=0.05)
        except queue.Empty:
            dead = [r for r in sorted(pending) if processes[r].exitcode is not None]
            if not dead:
                continue
            try:  # it may have reported just before exiting
                rank, ok, payload = results.get(timeout=1.0)
            except queue.Empty:
                code = processes[dead[0]].exitcode
                raise RuntimeError(
                    f"{_who(dead[0], parties)} exited with code {code} without reporting."
                ) from None
        if not ok:
            raise RuntimeError(f"{_who(rank, parties)} failed:\n{payload}")
        pending.discard(rank)
        if rank < parties:
            values[rank] = pickle.loads(payload)
    return values
