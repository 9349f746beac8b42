"""Start ranks: spawned processes from Python (:func:`launch`) or torchrun (:func:`init_from_env`).

Both give the rank's function a :class:`Worker` (rank, world size, device) with the default
process group initialised: gloo for CPU tensors, NCCL for CUDA ones (one GPU per rank).
"""

from __future__ import annotations

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
) -> Worker:
    """Join the process group of a ``torchrun`` launch (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT`` and ``LOCAL_RANK`` from the environment).

    ``torchrun --nproc-per-node K script.py``: every rank runs the script, calls this, then the
    same partitioned simulation. If a rank fails, torchrun stops the others.

    Args:
        backend: ``torch.distributed`` backend (default gloo on CPU, NCCL on CUDA).
        device: ``"cpu"`` (default) or ``"cuda"`` (``cuda:LOCAL_RANK``).
        timeout: seconds a collective may wait for the other ranks before it fails.
    """
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"init_from_env needs the environment torchrun sets; missing {missing}. Start the "
            "script with `torchrun --nproc-per-node K script.py`, or use launch(fn, K)."
        )
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
    return Worker(rank, world, device_, str(dist.get_backend()))


@dataclass(frozen=True)
class _Setup:
    world_size: int
    port: int
    backend: str | None
    device: str | None
    timeout: float
    threads: int


def _process(rank: int, setup: _Setup, fn: Callable, args: tuple, results: Any) -> None:
    """One rank: join the group, run ``fn``, report its value or its traceback."""
    try:
        torch.set_num_threads(setup.threads)
        device, backend = _device_and_backend(setup.device, setup.backend, rank)
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

    Raises:
        RuntimeError: as soon as one rank fails or dies, naming it, with its traceback; the
            other ranks (waiting for it in a collective) are terminated.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}.")
    threads = threads or max(1, (os.cpu_count() or 1) // world_size)
    # the store picks a free port itself (no race between choosing a port and binding it)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    setup = _Setup(world_size, store.port, backend, device, timeout, threads)
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
    try:
        return _collect(processes, results)
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


def _collect(processes: list, results: Any) -> list:
    """Every rank's value; raise at the first failure or silent death."""
    values: list = [None] * len(processes)
    pending = set(range(len(processes)))
    failures: dict[int, str] = {}
    while pending:
        try:
            rank, ok, payload = results.get(timeout=0.05)
        except queue.Empty:
            if any(processes[r].exitcode is not None for r in pending):
                _fail(processes, results, pending, failures, values)  # died silently?
            continue
        pending.discard(rank)
        if not ok:
            failures[rank] = payload
            _fail(processes, results, pending, failures, values)
        values[rank] = pickle.loads(payload)
    return values


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
