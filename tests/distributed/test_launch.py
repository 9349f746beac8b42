"""Starting ranks: a failing rank makes launch raise at once with its traceback (no hang); a
torchrun-style start from environment variables runs the same partitioned simulation."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from lpm_graph import simulate
from lpm_graph.distributed import init_from_env, launch

WORKER = Path(__file__).with_name("_env_worker.py")


def _failing(worker):
    dist.barrier()
    if worker.rank == 1:
        raise ValueError("rank one gives up")
    dist.barrier()  # rank 0 waits here for rank 1 forever (well, for the 300 s timeout)


def test_a_failing_rank_makes_launch_raise_at_once_with_its_traceback():
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"rank 1 failed(.|\n)*ValueError: rank one gives up"):
        launch(_failing, 2, timeout=300)
    assert time.perf_counter() - start < 60  # not the process group's 300 s timeout


def _dies(worker):
    if worker.rank == 1:
        os._exit(3)
    dist.barrier()


@pytest.mark.slow
def test_a_rank_that_dies_silently_is_named():
    with pytest.raises(RuntimeError, match="rank 1 exited with code 3 without reporting"):
        launch(_dies, 2, timeout=300)


def test_launch_checks_the_world_size():
    with pytest.raises(ValueError, match="positive int"):
        launch(_failing, 0)


def test_init_from_env_outside_torchrun_says_how_to_start(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        init_from_env()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_results(folder: Path, world: int) -> None:
    sys.path.insert(0, str(WORKER.parent))
    try:
        import _env_worker as w
    finally:
        sys.path.remove(str(WORKER.parent))
    ref = simulate(w.protocol(), w.graph(), w.STEPS, initial_infected=6, seed=2)
    for rank in range(world):
        out = torch.load(folder / f"rank{rank}.pt", weights_only=True)
        assert out["who"].tolist() == [rank, world] and out["backend"] == "gloo"
        for key, value in ref.counts.items():
            assert torch.equal(out["counts"][key], value), key
        assert torch.equal(out["I"], ref.final_state["I"])
    assert ref.flows["infections"].sum() > 10


def test_init_from_env_runs_a_torchrun_style_launch(tmp_path):
    world, port = 2, _free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        outputs = [p.communicate(timeout=180)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * world, "\n".join(outputs)
    _check_results(tmp_path, world)


@pytest.mark.slow
def test_under_torchrun(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3"]
    done = subprocess.run(
        [*cmd, str(WORKER), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _check_results(tmp_path, 3)
