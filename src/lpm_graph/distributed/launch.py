"""Start ranks: spawned processes from Python (:func:`launch`) or torchrun (:func:`init_from_env`).

Both give the rank's function a :class:`Worker` (rank, world size, device) with the default
process group initialised: gloo for CPU tensors, NCCL for CUDA ones (one GPU per rank), and
both name a rank that dies or freezes within seconds (:mod:`.heartbeat`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .heartbeat import Pulse, check_heartbeat, start_heartbeat

__all__ = ["Worker", "init_from_env", "launch"]


@dataclass(frozen=True)
class Worker:
    """One rank of a partitioned run.

    Attributes:
        rank: this process's rank.
        world_size: number of ranks.
        device: where this rank keeps its tensors (``cuda:<local rank>`` with CUDA).
        backend: the process group's backend.
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str


def _device_and_backend(
    device: str | torch.device | None, backend: str | None, local_rank: int
) -> tuple[torch.device, str]:
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        if device.index is None:  # one GPU per rank (NCCL refuses two ranks on one device)
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device, backend or ("nccl" if device.type == "cuda" else "gloo")


def init_from_env(
    *,
    backend: str | None = None,
    device: str | torch.device | None = None,
    timeout: float = 300.0,
    heartbeat: float | None = 10.0,
) -> Worker:
    """Join the process group of a ``torchrun`` launch (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT`` and ``LOCAL_RANK`` from the environment).

    ``torchrun --nproc-per-node K script.py``: every rank runs the script, calls this, then the
    same partitioned simulation. If a rank fails, torchrun stops the others. Ranks started by
    hand with these variables work the same way.

    A rank whose heartbeat stops for ``heartbeat`` seconds (frozen, stopped, killed) makes
    every other rank log an error naming it and exit with code 1, instead of waiting in a
    collective for ``timeout``; a collective of this package that fails because a rank died
    raises a ``RuntimeError`` naming it (see :mod:`lpm_graph.distributed.heartbeat`).

    Args:
        backend: ``torch.distributed`` backend (default gloo on CPU, NCCL on CUDA).
        device: ``"cpu"`` (default) or ``"cuda"`` (``cuda:LOCAL_RANK``).
        timeout: seconds a collective may wait for the other ranks before it fails.
        heartbeat: seconds without a heartbeat after which a rank is reported as frozen
            (``None``: no heartbeat; code that holds the GIL this long looks frozen).
    """
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"init_from_env needs the environment torchrun sets; missing {missing}. Start the "
            "script with `torchrun --nproc-per-node K script.py`, or use launch(fn, K)."
        )
    heartbeat = check_heartbeat(heartbeat)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device_, backend_ = _device_and_backend(
        device, backend, int(os.environ.get("LOCAL_RANK", rank))
    )
    if not dist.is_initialized():
        dist.init_process_group(
            backend_,
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout),
        )
        # registered before the heartbeat's own handler, so it runs after it (last in, first out)
        atexit.register(_destroy_at_exit)
    # after the rendezvous: with ranks started by hand, rank 0's init starts the store
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    start_heartbeat(host, port, rank, world, heartbeat, watch=True, connect_timeout=timeout)
    return Worker(rank, world, device_, str(dist.get_backend()))


def _destroy_at_exit() -> None:
    """Destroy the process group ``init_from_env`` made, while the interpreter is still alive.

    A rank that exits without it can abort (SIGABRT, "terminate called without an active
    exception"): gloo's worker threads may still hold work that refers to Python objects, and
    destroying those during the interpreter's finalisation fails (PyTorch issue 190489). Seen
    in CI on a rank that finished before its peer, on a loaded machine. Local to this rank:
    gloo's destroy waits for no peer."""
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


@dataclass(frozen=True)
class _Setup:
    world_size: int
    port: int
    backend: str | None
    device: str | None
    timeout: float
    threads: int
    heartbeat: float | None


def _process(rank: int, setup: _Setup, fn: Callable, args: tuple, results: Any) -> None:
    """One rank: join the group, run ``fn``, report its value or its traceback."""
    try:
        torch.set_num_threads(setup.threads)
        device, backend = _device_and_backend(setup.device, setup.backend, rank)
        start_heartbeat(  # before the rendezvous: a rank frozen there is named too
            "127.0.0.1", setup.port, rank, setup.world_size, setup.heartbeat, watch=False
        )
        store = dist.TCPStore(
            "127.0.0.1", setup.port, is_master=False, timeout=timedelta(seconds=setup.timeout)
        )
        dist.init_process_group(
            backend,
            store=store,
            rank=rank,
            world_size=setup.world_size,
            timeout=timedelta(seconds=setup.timeout),
        )
        value = fn(Worker(rank, setup.world_size, device, backend), *args)
        dist.destroy_process_group()
        results.put((rank, True, pickle.dumps(value)))
    except BaseException:  # a failure of any kind is reported, never swallowed
        results.put((rank, False, traceback.format_exc()))


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *,
    args: tuple = (),
    backend: str | None = None,
    device: str | None = None,
    timeout: float = 300.0,
    threads: int | None = None,
    heartbeat: float | None = 10.0,
) -> list:
    """Run ``fn(worker, *args)`` in ``world_size`` new processes, one rank each; return their
    values (rank 0 first).

    ``fn``, ``args`` and the return values travel by pickling: use module-level functions, and
    build large inputs (the graph, the :class:`~lpm_graph.distributed.Partition`) once here and
    pass them in ``args``. The processes are started with ``spawn`` and are daemonic.

    Args:
        fn: one rank's work, ``fn(worker: Worker, *args) -> picklable value``.
        world_size: number of ranks (processes).
        args: more positional arguments of ``fn``.
        backend: ``torch.distributed`` backend (default gloo, NCCL with ``device="cuda"``).
        device: ``"cpu"`` (default) or ``"cuda"`` (one GPU per rank: ``cuda:rank % gpus``).
        timeout: seconds any collective may wait (the process group's timeout).
        threads: torch threads per rank (default: the cores shared among the ranks).
        heartbeat: seconds without a rank's heartbeat after which it is reported as frozen
            (``None``: no heartbeat; code that holds the GIL this long looks frozen).

    Raises:
        RuntimeError: as soon as one rank fails or dies (within about a second), or sends
            no heartbeat for ``heartbeat`` seconds (frozen, stopped), naming it, with its
            traceback; the other ranks (waiting for it in a collective) are terminated.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}.")
    heartbeat = check_heartbeat(heartbeat)
    threads = threads or max(1, (os.cpu_count() or 1) // world_size)
    # the store picks a free port itself (no race between choosing a port and binding it)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    setup = _Setup(world_size, store.port, backend, device, timeout, threads, heartbeat)
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(
            target=_process,
            args=(rank, setup, fn, args, results),
            name=f"lpm-graph rank {rank}",
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    pulse = Pulse(store, list(range(world_size)), started=False) if heartbeat else None
    try:
        return _collect(processes, results, pulse, heartbeat)
    finally:
        deadline = time.monotonic() + 1.0  # a moment to exit on their own, then end them
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join()


def _collect(processes: list, results: Any, pulse: Pulse | None, heartbeat: float | None) -> list:
    """Every rank's value; raise at the first failure, silent death or silent heartbeat."""
    values: list = [None] * len(processes)
    pending = set(range(len(processes)))
    failures: dict[int, str] = {}
    read = time.monotonic()
    while pending:
        try:
            rank, ok, payload = results.get(timeout=0.05)
        except queue.Empty:
            if any(processes[r].exitcode is not None for r in pending):
                _fail(processes, results, pending, failures, values)  # died silently?
            if pulse is not None and time.monotonic() - read >= 0.25:
                read = time.monotonic()
                pulse.poll()
                silent = pulse.silent(heartbeat)
                _frozen(processes, {r: age for r, age in silent.items() if r in pending})
            continue
        pending.discard(rank)
        if not ok:
            failures[rank] = payload
            _fail(processes, results, pending, failures, values)
        values[rank] = pickle.loads(payload)
    return values


def _frozen(processes: list, silent: dict[int, float]) -> None:  # rank -> seconds
    """Kill the ranks that sent no heartbeat (a stopped process ignores SIGTERM) and raise."""
    if not silent:
        return
    for r in silent:
        processes[r].kill()
    ages = ", ".join(f"rank {r} for {age:.1f} s" for r, age in sorted(silent.items()))
    raise RuntimeError(
        f"no heartbeat from {ages}: frozen, stopped by a signal (SIGSTOP, Ctrl-Z), or hung "
        "outside Python; the ranks were stopped. (Code that holds the GIL this long looks "
        "frozen too: raise launch(heartbeat=...) or pass None.)"
    )


def _fail(
    processes: list, results: Any, pending: set[int], failures: dict[int, str], values: list
) -> None:
    """Raise for the first failure, after a moment for the other ranks to report: a rank that
    died silently (killed, out of memory) is named before the ranks that then lost their
    connection to it."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            rank, ok, payload = results.get(timeout=0.05)
        except queue.Empty:
            continue
        pending.discard(rank)
        if ok:
            values[rank] = pickle.loads(payload)
        else:
            failures.setdefault(rank, payload)
    silent = [r for r in sorted(pending) if processes[r].exitcode is not None]
    if not silent and not failures:
        return  # the process exited after reporting: nothing wrong
    others = [
        f"rank {r} failed in turn: {tb.strip().splitlines()[-1]}"
        for r, tb in failures.items()
        if r not in silent
    ]
    if silent:
        r = silent[0]
        message = (
            f"rank {r} exited with code {processes[r].exitcode} without reporting (killed, or "
            "out of memory?); the other ranks were stopped."
        )
        if others:
            message += "\n" + "\n".join(others)
    else:
        first, *rest = failures
        message = f"rank {first} failed; the other ranks were stopped:\n{failures[first]}"
        if rest:
            message += "\n".join(others[1:])
    raise RuntimeError(message)
