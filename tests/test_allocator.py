"""The allocator tuning: large temporaries come from the heap, and users can opt out."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from lpm_graph import Simulator, _allocator
from lpm_graph.graph import PopulationGraph
from lpm_graph.protocols import SIR

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

PROBE = textwrap.dedent(
    """
    import ctypes, sys, torch
    from lpm_graph import _allocator

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                    "keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    tuned = _allocator.tune_allocator()
    before = libc.mallinfo2().hblkhd
    x = torch.empty(16_000_000)  # 64 MB, above glibc's largest default threshold
    mapped = libc.mallinfo2().hblkhd - before
    print(int(tuned), mapped)
    """
)


def _probe(**env: str) -> tuple[int, int]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LPM_GRAPH_ALLOCATOR"))}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    tuned, mapped = done.stdout.split()
    return int(tuned), int(mapped)


@glibc
def test_a_tuned_process_takes_large_blocks_from_the_heap():
    tuned, mapped = _probe()
    assert tuned == 1 and mapped < 1_000_000


@glibc
@pytest.mark.parametrize(
    "env",
    [
        {"LPM_GRAPH_ALLOCATOR": "default"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.check=0"},
    ],  # fmt: skip
)
def test_the_user_can_keep_the_allocator(env):
    tuned, mapped = _probe(**env)
    assert tuned == 0 and mapped >= 64_000_000  # mapped, as glibc does by default


def test_a_large_run_tunes_the_allocator(monkeypatch):
    calls = []
    monkeypatch.setattr(_allocator, "LARGE", 50)
    monkeypatch.setattr(_allocator, "tune_allocator", lambda: calls.append(1) or True)
    edges = torch.tensor([[0, 1], [1, 0]])
    sim = Simulator(SIR(0.1, 0.1), steps=2)
    sim(PopulationGraph.from_edge_index(edges, num_nodes=49), initial_infected=1)
    assert calls == []
    sim(PopulationGraph.from_edge_index(edges, num_nodes=50), initial_infected=1)
    assert calls == [1]


def test_an_unknown_choice_warns_in_the_log_and_changes_nothing(monkeypatch, caplog):
    monkeypatch.setenv("LPM_GRAPH_ALLOCATOR", "fast")
    assert _allocator._apply(force=False) is False
    assert "not 'tuned' or 'default'" in caplog.text
