"""A frozen or dead rank is named within seconds: by launch(), and by the ranks themselves
when they were started from environment variables (torchrun-style); a rank that finishes
early is not taken for a frozen one."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from lpm_graph.distributed import all_reduce_sum, init_from_env, launch

ENV_RANK = Path(__file__).with_name("_env_loop.py")
HEARTBEAT = 3.0  # seconds; the default is 10


def _loops(worker, folder: str) -> None:
    """Collectives for up to 60 s; ``rank<r>.ready`` holds the pid once they run."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        all_reduce_sum(torch.ones(1))
        ready = Path(folder) / f"rank{worker.rank}.ready"
        if not ready.exists():
            ready.write_text(str(os.getpid()))
        time.sleep(0.01)


def _signal_when_ready(folder: Path, rank: int, sig: int, sent: list, timeout: float) -> None:
    ready, end = folder / f"rank{rank}.ready", time.monotonic() + timeout
    while time.monotonic() < end:
        if ready.exists() and ready.read_text():
            os.kill(int(ready.read_text()), sig)
            sent.append(time.monotonic())
            return
        time.sleep(0.02)


def test_launch_names_a_frozen_rank_within_seconds(tmp_path):
    sent: list[float] = []
    stopper = threading.Thread(
        target=_signal_when_ready, args=(tmp_path, 1, signal.SIGSTOP, sent, 120), daemon=True
    )
    stopper.start()
    with pytest.raises(RuntimeError, match=r"no heartbeat from rank 1 for [\d.]+ s: frozen"):
        launch(_loops, 2, args=(str(tmp_path),), heartbeat=HEARTBEAT, timeout=300)
    took = time.monotonic() - sent[0]
    assert HEARTBEAT <= took < 15, took  # not the collective's 300 s
    pid = int((tmp_path / "rank1.ready").read_text())
    with pytest.raises(ProcessLookupError):  # the stopped rank was killed
        os.kill(pid, 0)


def _start_env_ranks(folder: Path, mode: str) -> list[subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
        cmd = [sys.executable, str(ENV_RANK), str(folder), str(HEARTBEAT), mode]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    return procs


@pytest.mark.parametrize(
    ("sig", "victim", "message"),
    [
        # a dead peer: the collective fails at once, the error names the peer
        pytest.param(signal.SIGKILL, 1, r"RuntimeError: rank 0: a collective failed because "
                     r"rank 1 sent no heartbeat for [\d.]+ s", id="SIGKILL rank 1"),
        # a frozen peer: the collective would wait 120 s; the watch names it and exits
        pytest.param(signal.SIGSTOP, 1, r"rank 0: rank 1 sent no heartbeat for [\d.]+ s "
                     r"\(frozen", id="SIGSTOP rank 1"),
        # rank 0 hosts the store when ranks are started by hand
        pytest.param(signal.SIGSTOP, 0, r"rank 1: rank 0, which hosts the store at "
                     r"127.0.0.1:\d+, has not answered for [\d.]+ s", marks=pytest.mark.slow,
                     id="SIGSTOP rank 0"),
        pytest.param(signal.SIGKILL, 0, r"rank 1: a collective failed because rank 0, which "
                     r"hosts the store at 127.0.0.1:\d+, is gone", marks=pytest.mark.slow,
                     id="SIGKILL rank 0"),
    ],
)  # fmt: skip
def test_ranks_started_from_the_environment_name_a_dead_or_frozen_peer(
    tmp_path, sig, victim, message
):
    procs = _start_env_ranks(tmp_path, "loop")
    try:
        sent: list[float] = []
        _signal_when_ready(tmp_path, victim, sig, sent, timeout=120)
        assert sent, [p.communicate(timeout=5)[0].decode()[-2000:] for p in procs]
        survivor = procs[1 - victim]
        output = survivor.communicate(timeout=60)[0].decode()
        took = time.monotonic() - sent[0]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert survivor.returncode == 1, output[-3000:]
    assert took < 15, took
    assert re.search(message, output), output[-3000:]


def test_a_rank_that_finishes_first_is_not_taken_for_a_frozen_one(tmp_path):
    procs = _start_env_ranks(tmp_path, "finish")
    try:
        outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)[-3000:]


@pytest.mark.parametrize("bad", [0, -1.0, "10", True])
def test_the_heartbeat_setting_is_checked(bad, monkeypatch):
    with pytest.raises(ValueError, match=r"heartbeat must be the seconds .* or None"):
        launch(_loops, 2, heartbeat=bad)
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "x",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=r"heartbeat must be the seconds"):
        init_from_env(heartbeat=bad)
