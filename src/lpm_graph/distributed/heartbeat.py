"""Heartbeats through the rendezvous TCPStore: a frozen or dead rank is named within seconds.

A collective waits for every rank of the group. gloo notices a rank that stopped only at the
group's timeout (300 s by default), and a rank that died makes the others fail at once with
``Connection reset by peer``; neither error names the rank. So every rank runs a
:class:`Heartbeat`, a daemon thread that adds one to the store key ``<prefix><rank>`` every
``interval`` seconds and sets it to ``-1`` when the process exits normally or leaves the
group, and whoever reads the keys (:class:`Pulse`) tells a rank that left from a rank that
went silent: killed (``SIGKILL``, out of memory), stopped (``SIGSTOP``), or hung outside
Python for ``timeout`` seconds.

- Under :func:`~lpm_graph.distributed.launch` the launching process reads the keys, stops
  every rank when one is silent and raises naming it.
- A rank started from the environment (torchrun, or by hand) reads them itself. When a peer
  is silent it logs an error naming the peer and ends its own process (exit code 1), as
  NCCL's watchdog does: a thread cannot interrupt a gloo collective, which would otherwise
  wait for the group's timeout. When a collective of this package fails because a peer is
  gone, the error names the peer (:func:`named_failures`).

The thread needs the GIL: code that holds it for ``timeout`` seconds (a C extension that
does not release it) looks frozen. ``heartbeat=None`` turns all this off.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import torch.distributed as dist

__all__ = ["Heartbeat", "Pulse", "check_heartbeat", "named_failures", "start_heartbeat"]

logger = logging.getLogger(__name__)

_LOST = re.compile(
    r"Connection (reset|closed) by peer|Broken pipe|Connection refused|Timed out waiting"
    r"|Socket Timeout|Connection timed out",
    re.IGNORECASE,
)
"""gloo's and the store's words for a peer that is gone or silent."""


def check_heartbeat(heartbeat: float | None) -> float | None:
    """``heartbeat`` as seconds, or ``None``; anything else raises ``ValueError``."""
    if heartbeat is None:
        return None
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or heartbeat <= 0:
        raise ValueError(
            "heartbeat must be the seconds without a heartbeat after which a rank is reported "
            f"as frozen (> 0, e.g. 10.0), or None to turn the heartbeat off; got {heartbeat!r}."
        )
    return float(heartbeat)


def _prefix() -> str:
    """The keys' prefix; a torchrun restart (same store) starts afresh."""
    return f"lpm_graph/heartbeat/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"


def _describe_silent(silent: dict[int, float]) -> str:
    return "; ".join(
        f"rank {r} sent no heartbeat for {age:.1f} s (frozen, stopped by a signal, killed, or "
        "hung outside Python)"
        for r, age in sorted(silent.items())
    )


class Pulse:
    """Reads the ranks' heartbeat counters and remembers when each last moved.

    Args:
        store: the store the ranks beat into.
        ranks: the ranks to read.
        started: the ranks are known to be running (their process group is up): one that
            has not beaten yet counts as silent from now on. Otherwise a rank is judged from
            its first beat on.
    """

    def __init__(self, store: dist.Store, ranks: list[int], *, started: bool) -> None:
        self.store = store
        self.ranks = list(ranks)
        self.keys = [f"{_prefix()}{r}" for r in self.ranks]
        self.started = started
        self.count = dict.fromkeys(self.ranks, 0)
        self.moved = dict.fromkeys(self.ranks, time.monotonic())
        self.left: set[int] = set()
        self._lock = threading.Lock()  # the beat thread writes, the watch and a collective read

    def poll(self) -> None:
        """Read every counter once (one round trip where the store has ``multi_get``)."""
        if hasattr(self.store, "multi_get") and all(self.count.values()):
            values = [int(v) for v in self.store.multi_get(self.keys)]
        else:  # a key not set yet (``get`` would wait for it), or an older torch
            values = [self.store.add(k, 0) for k in self.keys]
        now = time.monotonic()
        with self._lock:  # not around the reads: one to a frozen store never returns
            for r, v in zip(self.ranks, values):
                if v < 0:
                    self.left.add(r)
                elif v != self.count[r]:
                    self.count[r], self.moved[r] = v, now

    def silent(self, seconds: float) -> dict[int, float]:
        """Ranks that have not left and have not beaten for ``seconds``: rank -> seconds
        since their last beat."""
        now = time.monotonic()
        with self._lock:
            moved = dict(self.moved)
        return {
            r: now - moved[r]
            for r in self.ranks
            if (self.count[r] or self.started) and r not in self.left and now - moved[r] >= seconds
        }


class Heartbeat:
    """This rank's beat and, with ``watch``, its watch of the other ranks.

    Two daemon threads: one beats (and reads the others' counters), one watches. A store op
    to a frozen host blocks whatever the store's timeout, so the watcher judges the store by
    how long ago an op last came back.

    Args:
        host, port: the store's address (the beat thread opens its own connection).
        rank, world_size: this rank and the group's size.
        timeout: seconds without a beat after which a rank is silent.
        watch: watch the other ranks (their process group is up), and end this process
            when one is silent; ``False`` when the launcher watches.
        connect_timeout: seconds to wait for the store at the start.
    """

    def __init__(
        self,
        host: str,
        port: int,
        rank: int,
        world_size: int,
        timeout: float,
        *,
        watch: bool,
        connect_timeout: float = 300.0,
    ) -> None:
        self.host, self.port, self.rank = host, port, rank
        self.timeout = float(timeout)
        self.interval = min(0.5, self.timeout / 8)
        self.watch = watch
        self.key = f"{_prefix()}{rank}"
        self.store = dist.TCPStore(
            host, port, is_master=False, timeout=timedelta(seconds=connect_timeout)
        )
        self.store.add(self.key, 1)
        others = [r for r in range(world_size) if r != rank]
        self.pulse = Pulse(self.store, others, started=watch)
        self.answered = time.monotonic()  # when a store op last came back
        self.store_error: BaseException | None = None  # the last op's error, if it failed
        self.reported = False  # a failure was raised: the watch stands down
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._beat, daemon=True, name="lpm-graph beat")]
        if watch:
            self._threads.append(
                threading.Thread(target=self._watch, daemon=True, name="lpm-graph watch")
            )
        for thread in self._threads:
            thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop beating (the beat thread marks this rank as gone)."""
        if self._stop.is_set():
            return
        self._stop.set()
        atexit.unregister(self.stop)
        # long enough for a store op under load (a thread still inside one when the
        # interpreter finalises can abort the process), not for ever: an op to a frozen
        # store never returns
        wait = max(2.0, self.timeout / 2)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=wait)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if self.watch and not dist.is_initialized():
                self._stop.set()  # the group was destroyed: nobody waits for this rank
                break
            try:
                self.store.add(self.key, 1)
                if self.watch:
                    self.pulse.poll()
                self.answered, self.store_error = time.monotonic(), None
            except Exception as err:  # noqa: BLE001 (the store's host is gone)
                self.store_error = err
                self._stop.wait(self.timeout / 4)  # each failed op logs a C++ warning
        with contextlib.suppress(Exception):
            self.store.set(self.key, "-1")

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if not dist.is_initialized():
                break
            if self.reported:
                continue
            quiet = time.monotonic() - self.answered
            if quiet >= self.timeout:
                self._give_up(self._store_lost(quiet))
            silent = self.pulse.silent(self.timeout)
            if silent:
                self._give_up(_describe_silent(silent))

    def _store_lost(self, quiet: float) -> str:
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        who = "the torchrun agent" if agent else "rank 0"
        err = self.store_error
        if err is not None:
            first = str(err).strip().splitlines()[0]
            return f"{who}, which hosts the store at {self.host}:{self.port}, is gone ({first})"
        return (
            f"{who}, which hosts the store at {self.host}:{self.port}, has not answered for "
            f"{quiet:.1f} s (frozen, stopped by a signal, or hung)"
        )

    def _give_up(self, why: str) -> None:
        """End this process: its collectives would wait for the group's timeout."""
        logger.error(
            "rank %d: %s. Rank %d ends (exit code 1) rather than wait in a collective for the "
            "process group's timeout; init_from_env(heartbeat=None) turns this off.",
            self.rank, why, self.rank,
        )  # fmt: skip
        for handler in (*logging.getLogger().handlers, *logger.handlers):
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(1)

    def culprits(self) -> str | None:
        """Why a collective failed: the ranks that left or went silent, waiting up to
        ``timeout`` seconds to tell a dead rank (no beat for 2 s) from a live one."""
        self.reported = True
        confirm = min(self.timeout, max(2.0, 4 * self.interval))
        deadline = time.monotonic() + self.timeout
        while True:
            quiet = time.monotonic() - self.answered
            if self.store_error is not None or quiet >= confirm:
                return self._store_lost(quiet)
            silent = self.pulse.silent(confirm)
            left = sorted(self.pulse.left - set(silent))
            if silent or left or time.monotonic() >= deadline:
                break
            time.sleep(self.interval / 2)
        parts = [_describe_silent(silent)] if silent else []
        parts += [f"rank {r} left (exited, or destroyed its process group)" for r in left]
        return "; ".join(parts) or None


_current: Heartbeat | None = None
"""This process's heartbeat: one per process, as there is one default process group."""


def start_heartbeat(
    host: str,
    port: int,
    rank: int,
    world_size: int,
    timeout: float | None,
    *,
    watch: bool,
    connect_timeout: float = 300.0,
) -> None:
    """Start this process's heartbeat, replacing an earlier one (none with ``timeout=None``
    or a single rank)."""
    global _current
    if _current is not None:
        _current.stop()
        _current = None
    if timeout is not None and world_size > 1:
        _current = Heartbeat(
            host, port, rank, world_size, timeout, watch=watch, connect_timeout=connect_timeout
        )


@contextlib.contextmanager
def named_failures() -> Iterator[None]:
    """Re-raise a collective's lost connection or timeout naming the rank(s) behind it."""
    try:
        yield
    except RuntimeError as err:
        beat = _current
        if beat is None or not beat.watch or not _LOST.search(str(err)):
            raise
        why = beat.culprits()
        if why is None:
            raise
        first = str(err).strip().splitlines()[0]
        raise RuntimeError(
            f"rank {beat.rank}: a collective failed because {why}. (gloo: {first})"
        ) from err
