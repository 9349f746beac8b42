"""One compute party per process, over ``torch.distributed``: the transport, the dealer's loop
and a launcher.

World layout: ranks ``0 .. K-1`` are the compute parties, rank ``K`` is the dealer. The parties
exchange shares in a process group of their own (the dealer is not in it); the dealer talks to
each party point to point and sends party ``i`` its own shares and nothing else.

A request for correlated randomness or a private input:

1. Every party makes the same calls in the same order (SPMD). Party 0 sends the request to the
   dealer: a small int64 tensor with the operation, the kind or input name, the shape and the
   integer keyword arguments (all public: the same for every party).
2. The dealer makes the item with :meth:`Dealer.make` / :meth:`Dealer.input`: the same class,
   order of requests as :class:`~lpm_graph.secure.LocalTransport` (with a reproducible seed,
   hence the same shares).
3. The dealer sends party ``i``, in one message, a header (fractional bits, names and shapes of
   the parts) and its row ``[1, *shape]`` of every part. If making the item failed, the header
   carries only the exception's type (its message may quote a private input, e.g. a value too
   large for the ring), every party raises, the dealer logs the traceback and goes on serving.

Threat model: semi-honest parties and dealer, the dealer colludes with no party. Channels are
plain TCP (gloo) or NCCL: run on a trusted network or loopback.

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

from .dealer import Dealer, InputOwner
from .prg import Randomness, as_randomness
from .ring import FRAC_BITS
from .session import Session, Transport

__all__ = ["DistributedTransport", "launch", "serve_dealer", "session_from_env"]

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

    Needs an initialised default process group of ``parties + 1`` ranks (rank ``parties`` is the
    dealer running :func:`serve_dealer`). Made by :func:`launch` and :func:`session_from_env`.

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
        if world != parties + 1 or rank >= parties:
            raise ValueError(
                f"rank {rank} of {world} is not a party of {parties} (ranks 0..{parties - 1} "
                f"are the parties, rank {parties} the dealer)."
            )
        self.parties = parties
        self.rank = rank
        self.local = (rank,)
        self.dealer = parties  # the dealer's rank
        # only the parties make (and are in) this group: the dealer never sees their exchanges
        self.group = dist.new_group(list(range(parties)), use_local_synchronization=True)
        self._dealt = 0
        self._closed = False

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
        parts, _ = self._ask(request, f"{kind!r} of shape {tuple(shape)}")
        return parts

    def input(self, name: str, step: int | None) -> tuple[Tensor, int]:
        request = _words(_INPUT, name, step is not None, step or 0)
        parts, bits = self._ask(request, f"private input {name!r} at step {step}")
        return parts["shares"], bits

    def _ask(self, request: list[int], what: str) -> tuple[dict[str, Tensor], int]:
        if self._closed:
            raise RuntimeError("the transport is closed.")
        if self.rank == 0:
            _send(torch.tensor(request, dtype=torch.int64), self.dealer)
        message = _recv(self.dealer)
        size = int(message[0])
        header, payload = _Reader(message[1 : size + 1].tolist()), message[size + 1 :]
        if header.int() == _FAILED:
            raise RuntimeError(
                f"the dealer could not make {what}: {header.str()} (the traceback is in the "
                "dealer's log only: its message may quote private inputs)."
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
        self._dealt += payload.numel() * payload.element_size()
        return parts, bits

    def _check_own_rows(self, parts: dict[str, Tensor]) -> None:
        """A party process holds its own row of shares and no other party's."""
        for name, part in parts.items():
            if part.shape[:1] != (1,):
                raise RuntimeError(
                    f"party {self.rank} received {name!r} with shape {tuple(part.shape)}; a party "
                    "process must receive exactly its own row [1, ...] of shares."
                )

    def dealer_bytes(self) -> int:
        """Bytes of shares this party received from the dealer (headers not counted)."""
        return self._dealt

    def close(self) -> None:
        """Tell the dealer to stop (party 0) and destroy this process's process groups."""
        if self._closed:
            return
        self._closed = True
        if self.rank == 0:
            _send(torch.tensor([_STOP]), self.dealer)
        dist.destroy_process_group()


# ---------------------------------------------------------------------- dealer
def serve_dealer(dealer: Dealer) -> None:
    """Answer the parties' requests until party 0 says stop (run on rank ``dealer.parties``)."""
    parties = dealer.parties
    if dist.get_rank() != parties or dist.get_world_size() != parties + 1:
        raise ValueError(
            f"the dealer of {parties} parties runs on rank {parties} of {parties + 1}, not on rank "
            f"{dist.get_rank()} of {dist.get_world_size()}."
        )
    while True:
        request = _Reader(_recv(0).tolist())
        op = request.int()
        if op == _STOP:
            return
        try:
            parts, bits = _serve(dealer, op, request)
        except Exception as error:
            _log.exception("the dealer could not serve a request")
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


def _serve(dealer: Dealer, op: int, request: _Reader) -> tuple[dict[str, Tensor], int]:
    if op == _CORRELATION:
        kind, shape = request.str(), tuple(request.ints())
        kwargs = {}
        for _ in range(request.int()):
            key = request.str()
            kwargs[key] = request.int()
        parts, bits = dealer.make(kind, shape, **kwargs), 0
    elif op == _INPUT:
        name, has_step, step = request.str(), request.int(), request.int()
        shares, bits = dealer.input(name, step if has_step else None)
        parts = {"shares": shares}
    else:
        raise ValueError(f"unknown request {op}.")
    for name, part in parts.items():
        if part.dtype != torch.int64 or part.shape[:1] != (dealer.parties,):
            raise TypeError(f"{name}: the dealer sends [parties, ...] int64 shares.")
    return parts, bits


# ---------------------------------------------------------------------- processes
@dataclass(frozen=True)
class _Setup:
    parties: int
    randomness: Randomness  # where each role's key comes from (drawn in its own process)
    owner: InputOwner | None
    frac_bits: int
    timeout: float
    backend: str | None
    device: str | None


def _connect(rank: int, setup: _Setup, store: dist.Store | None = None) -> Session | None:
    """Join the world; a party gets its :class:`Session`, the dealer serves and gets ``None``."""
    dist.init_process_group(
        setup.backend or "gloo",
        init_method=None if store is not None else "env://",
        store=store,
        rank=rank,
        world_size=setup.parties + 1,
        timeout=timedelta(seconds=setup.timeout),
    )
    if rank == setup.parties:
        serve_dealer(
            Dealer(setup.parties, seed=setup.randomness, owner=setup.owner,
                   frac_bits=setup.frac_bits)  # fmt: skip
        )
        dist.destroy_process_group()
        return None
    device = torch.device(setup.device or "cpu")
    if device.type == "cuda" and device.index is None:  # one GPU per party (NCCL needs it)
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    transport = DistributedTransport(setup.parties)
    session = Session(
        seed=setup.randomness, frac_bits=setup.frac_bits, transport=transport, device=device
    )
    if session.local != (rank,):
        raise RuntimeError(f"party {rank}'s session serves parties {session.local}, not ({rank},).")
    return session


def session_from_env(
    *,
    seed: int | Randomness | None = None,
    owner: InputOwner | None = None,
    frac_bits: int = FRAC_BITS,
    timeout: float = 600.0,
    backend: str | None = None,
    device: str | None = None,
    force_insecure: bool = False,
) -> Session | None:
    """The session of this process when started by ``torchrun --standalone --nproc-per-node K+1``.

    Ranks ``0 .. K-1`` get their :class:`Session`; the last rank is the dealer: it serves until
    the parties close their sessions and returns ``None``. Arguments as in :func:`launch`.
    """
    world = int(os.environ["WORLD_SIZE"])
    randomness = _checked(seed, owner, force_insecure)
    setup = _Setup(world - 1, randomness, owner, frac_bits, timeout, backend, device)
    return _connect(int(os.environ["RANK"]), setup)


def _process(rank: int, port: int, setup: _Setup, fn: Callable, args: tuple, results) -> None:
    try:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // (setup.parties + 1)))
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
    seed: int | Randomness | None, owner: InputOwner | None, force_insecure: bool
) -> Randomness:
    """The run's randomness; reproducible (seeded) randomness, the dealer's or the owner's
    draws', only with ``force_insecure``."""
    randomness = as_randomness(seed)
    owner_randomness = getattr(owner, "randomness", None)  # SIRInputs: an OwnerRandomness
    owner_randomness = getattr(owner_randomness, "randomness", owner_randomness)
    seeded = [
        what
        for what, r in (("seed", randomness), ("the owner's seed", owner_randomness))
        if isinstance(r, Randomness) and r.is_reproducible
    ]
    if seeded and not force_insecure:
        raise ValueError(
            f"{' and '.join(seeded)} make the run's shares or private draws follow from a "
            "seed anyone may know or search for, so the run would not be private. Leave the "
            "seeds out (Session/launch seed=None, SIRInputs(..., seed=None)) for a private "
            "run; pass force_insecure=True only to compare with a plaintext run in a test."
        )
    return randomness


def _role_part(rank: int, setup: _Setup, fn: Callable, args: tuple) -> tuple:
    """``(setup, fn, args)`` as process ``rank`` receives them: a party's setup holds no
    owner (it would hand the party the owner's plaintext attributes), the dealer gets no
    party function."""
    if rank == setup.parties:
        return setup, None, ()
    return replace(setup, owner=None), fn, args


def _who(rank: int, parties: int) -> str:
    return f"party {rank}" if rank < parties else f"the dealer (rank {rank})"


def launch(
    fn: Callable[..., Any],
    parties: int = 2,
    *,
    seed: int | Randomness | None = None,
    owner: InputOwner | None = None,
    frac_bits: int = FRAC_BITS,
    args: tuple = (),
    timeout: float = 600.0,
    backend: str | None = None,
    device: str | None = None,
    force_insecure: bool = False,
) -> list:
    """Run ``fn(session, *args)`` in ``parties`` processes, one compute party each, with a
    dealer process; return the parties' return values (party 0 first).

    ``fn`` and ``owner`` travel to the new processes by pickling: module-level functions or
    objects. The processes are daemonic (``fn`` cannot start processes of its own). Every party
    must make the same secure calls in the same order.

    Args:
        fn: the computation of one party, ``fn(session, *args) -> picklable value``.
        parties: number of compute parties ``K >= 2``.
        seed: ``None`` (default): every role draws its key from OS entropy in its own
            process. An int or :meth:`Randomness.reproducible
            <lpm_graph.secure.prg.Randomness.reproducible>`: the same shares as
            ``Session(parties, seed=seed)``, **not private**; refused unless
            ``force_insecure=True`` (tests).
        owner: the agents' private inputs (see :data:`~lpm_graph.secure.dealer.InputOwner`).
        frac_bits: fractional bits of fixed-point values.
        args: more positional arguments of ``fn``.
        timeout: seconds any one communication may wait, the dealer's wait for the next
            request included (the process groups' timeout).
        backend: ``torch.distributed`` backend. Default ``"gloo"``: the dealer's messages
            and the parties' exchanges, CUDA shares staged through the host.
            ``"cpu:gloo,cuda:nccl"`` exchanges CUDA shares over NCCL, which needs one GPU per
            party (NCCL refuses two ranks on one device).
        device: where each party keeps its shares (default CPU; ``"cuda"``: one GPU per party).
        force_insecure: allow a reproducible ``seed`` (tests only).

    Raises:
        RuntimeError: as soon as a party or the dealer fails or dies, naming it, with its
            traceback; the other processes are terminated.
    """
    if parties < 2:
        raise ValueError(f"secret sharing needs at least 2 parties, got {parties}.")
    randomness = _checked(seed, owner, force_insecure)
    setup = _Setup(parties, randomness, owner, frac_bits, timeout, backend, device)
    # the store picks a free port itself (no race between choosing a port and binding it)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(
            target=_process,
            # each process gets only its role's part: the owner goes to the dealer alone, the
            # party function and its arguments to the parties alone
            args=(rank, store.port, *_role_part(rank, setup, fn, args), results),
            name=_who(rank, parties),
            daemon=True,
        )
        for rank in range(parties + 1)
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
    pending = set(range(parties + 1))
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
