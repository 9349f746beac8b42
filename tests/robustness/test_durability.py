"""Durable writes: a kill or Ctrl-C in the middle of any write leaves the earlier file (or run)
whole, the next load either succeeds or names the damaged file, temporary files do not pile
up, and nothing is overwritten without being asked.

Each kill test forks a child that starts a real write, stops it half way (the patched writer
has put part of the bytes into the file) and tells the parent through a pipe; only then does
the parent send the signal, so there is no timing to go wrong on a loaded machine.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import select
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from importlib import resources

import pytest
import torch
from torch import nn

from lpm_graph import cli
from lpm_graph.datasets import CountySeries
from lpm_graph.datasets.generators import erdos_renyi
from lpm_graph.graph.storage import atomic_write, load_graph, save_graph, temporary_name
from lpm_graph.train import Trainer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill tests fork")

Y = {"y": torch.linspace(1.0, 2.0, 10, dtype=torch.float64)}
DAYS = slice(0, 8)


class Line(nn.Module):
    """``y_t = w0 + w1 t / T``: a model that trains in microseconds."""

    outputs = ("y",)

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        self.register_buffer("t", torch.arange(10, dtype=torch.float64) / 10)

    def forward(self) -> dict[str, torch.Tensor]:
        return {"y": self.w[0] + self.w[1] * self.t}


def _interrupted(child: Callable[[Callable[[], None]], int | None], signum: int) -> int:
    """Fork; the child runs ``child(hold)`` and calls ``hold()`` in the middle of a write,
    which tells the parent and waits; the parent then sends ``signum``. Returns the child's
    exit status (``-signum`` when the signal killed it)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        status = 3
        try:
            os.close(read)
            torch.set_num_threads(1)  # the parent's OpenMP pool does not survive a fork
            signal.signal(signal.SIGINT, signal.default_int_handler)

            def hold() -> None:
                os.write(write, b"!")
                while True:
                    time.sleep(1)

            status = int(child(hold) or 0)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 120)
        said = os.read(read, 1) if ready else b""
    finally:
        os.close(read)
    if said != b"!":
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child ended (or hung) before it reached the write")
    os.kill(pid, signum)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _half_torch_save(hold: Callable[[], None]) -> None:
    """In the child: torch.save writes half of the file, then holds."""
    real = torch.save

    def half(obj, handle) -> None:
        buffer = io.BytesIO()
        real(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        hold()

    torch.save = half


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------- graphs


def test_kill_during_save_graph_keeps_the_earlier_file(tmp_path):
    path = tmp_path / "g.pt"
    save_graph(erdos_renyi(50, 4.0, seed=0), path)
    before = path.read_bytes()
    bigger = erdos_renyi(2000, 4.0, seed=1)

    def child(hold):
        _half_torch_save(hold)
        save_graph(bigger, path)

    assert _interrupted(child, signal.SIGKILL) == -signal.SIGKILL
    assert path.read_bytes() == before
    (stale,) = tmp_path.glob(".g.pt.*.incomplete")  # the killed write, half done
    assert stale.stat().st_size > 0
    assert load_graph(path).num_nodes() == 50
    save_graph(erdos_renyi(60, 4.0, seed=2), path)  # removes the dead process's file
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt"]
    assert load_graph(path).num_nodes() == 60


def test_failed_write_leaves_no_temporary_and_live_ones_are_kept(tmp_path):
    path = tmp_path / "g.pt"
    atomic_write(path, b"good")

    def boom(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, boom)
    assert _files(tmp_path) == {"g.pt": b"good"}
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid whose process is gone
    mine = temporary_name(".g.pt.", ".incomplete")  # this live process's
    host = mine.split(".")[3].rsplit("-", 1)[0]
    kept = [mine, ".g.pt.otherhost-1.0123abcd.incomplete", ".g.pt.x.incomplete"]
    for name in [*kept, f".g.pt.{host}-{dead}.89abcdef.incomplete"]:
        (tmp_path / name).write_bytes(b"partial")
    atomic_write(path, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["g.pt", *kept])


def test_save_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd)))
    save_graph(erdos_renyi(20, 4.0, seed=0), tmp_path / "g.pt")
    assert (tmp_path / "g.pt").stat().st_ino in synced
    assert tmp_path.stat().st_ino in synced
    synced.clear()
    out = tmp_path / "run"
    argv = ["run", "--dataset", "synthetic:100", "--steps", "2", "--no-progress"]
    monkeypatch.setattr(cli, "_plot_run", lambda *args: None)
    assert cli.main([*argv, "--output", str(out)]) == 0
    for path in (out / "results.csv", out / "run.json", out):
        assert path.stat().st_ino in synced, path


# ---------------------------------------------------------------------------- damaged files


def _damaged(kind: str, good: bytes) -> bytes:
    return {
        "truncated": good[: len(good) // 2],
        "cut after 10 bytes": good[:10],
        "empty": b"",
        "garbage": bytes(range(256)) * 20,
        "text": b"day,deaths\n1,2\n" * 50,
        "a bare pickle": pickle.dumps([1, 2, 3], protocol=2),
    }[kind]


DAMAGE = ["truncated", "cut after 10 bytes", "empty", "garbage", "text", "a bare pickle"]


def _load_checkpoint(path):
    return Trainer(Line(), checkpoint=path, log_every=None).resume()


def _fit_resumed(path):
    return Trainer(Line(), checkpoint=path, log_every=None).fit(Y, DAYS, epochs=3, resume=True)


LOADERS = {"load_graph": load_graph, "resume": _load_checkpoint, "fit(resume)": _fit_resumed}


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("good")
    save_graph(erdos_renyi(30, 4.0, seed=0), folder / "g.pt")
    Trainer(Line(), checkpoint=folder / "c.pt", log_every=None).fit(Y, DAYS, epochs=2)
    graph = (folder / "g.pt").read_bytes()
    checkpoint = (folder / "c.pt").read_bytes()
    return {"load_graph": graph, "resume": checkpoint, "fit(resume)": checkpoint}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_file_is_named_as_damaged(tmp_path, good_files, loader, kind):
    path = tmp_path / "file.pt"
    path.write_bytes(_damaged(kind, good_files[loader]))
    with pytest.raises(ValueError) as info:
        LOADERS[loader](path)
    message = str(info.value)
    assert f"{path} is damaged" in message
    assert "weights_only=False" not in message and "`False`" not in message
    assert ("delete it" in message) and path.read_bytes() == _damaged(kind, good_files[loader])


class Foreign:
    """A pickled object: weights_only loading refuses to run its code."""


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_foreign_file_is_named_and_not_run(tmp_path, good_files, loader):
    pickled = tmp_path / "object.pt"
    pickled.write_bytes(pickle.dumps({"format": "x", "obj": Foreign()}, protocol=2))
    with pytest.raises(ValueError, match="holds Python objects") as info:
        LOADERS[loader](pickled)
    assert str(pickled) in str(info.value) and "weights_only=False" not in str(info.value)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else", "x": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="format 'something else'") as info:
        LOADERS[loader](other)
    assert f"{other} is not a" in str(info.value)


# ---------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_is_never_replaced_without_resume_or_overwrite(tmp_path):
    path = tmp_path / "fit.pt"
    trainer = Trainer(Line(), checkpoint=path, log_every=None)
    trainer.fit(Y, DAYS, epochs=3)
    before = path.read_bytes()
    model = Line()
    for again in (Trainer(model, checkpoint=path, log_every=None), trainer):
        with pytest.raises(ValueError) as info:
            again.fit(Y, DAYS, epochs=1)
        message = str(info.value)
        assert repr(str(path)) in message and "already exists" in message
        assert "fit(..., resume=True)" in message and "overwrite=True" in message
    assert path.read_bytes() == before and not model.w.detach().any()  # refused before work
    other = tmp_path / "other.pt"  # resumed from another file: still not this one's to replace
    Trainer(Line(), checkpoint=other, log_every=None).fit(Y, DAYS, epochs=1)
    moved = Trainer(Line(), checkpoint=path, log_every=None)
    moved.resume(other)
    with pytest.raises(ValueError, match="already exists"):
        moved.fit(Y, DAYS, epochs=2)
    assert path.read_bytes() == before
    resumed = Trainer(Line(), checkpoint=path, log_every=None).fit(Y, DAYS, epochs=5, resume=True)
    assert resumed.epochs == 5
    fresh = Trainer(Line(), checkpoint=path, log_every=None, overwrite=True)
    assert fresh.fit(Y, DAYS, epochs=2).epochs == 2
    assert _load_checkpoint(path).epochs == 2


def test_kill_during_a_checkpoint_keeps_the_last_one(tmp_path):
    path = tmp_path / "fit.pt"
    full = Line()
    Trainer(full, checkpoint=tmp_path / "full.pt", log_every=None).fit(Y, DAYS, epochs=4)
    Trainer(Line(), checkpoint=path, log_every=None).fit(Y, DAYS, epochs=2)
    before = path.read_bytes()

    def child(hold):
        _half_torch_save(hold)  # the checkpoint of epoch 3 is killed half written
        Trainer(Line(), checkpoint=path, log_every=None).fit(Y, DAYS, epochs=4, resume=True)

    assert _interrupted(child, signal.SIGKILL) == -signal.SIGKILL
    assert path.read_bytes() == before
    assert len(list(tmp_path.glob(".fit.pt.*.incomplete"))) == 1
    model = Line()
    trainer = Trainer(model, checkpoint=path, log_every=None)
    assert trainer.resume().epochs == 2
    assert trainer.fit(Y, DAYS, epochs=4).epochs == 4
    assert torch.equal(model.w, full.w)  # as if never killed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.pt", "full.pt"]


# ---------------------------------------------------------------------------- raw dataset files


def _bundled_county_data() -> bytes:
    return (
        resources.files("lpm_graph") / "datasets/data/gradabm_ma/county_data.csv.gz"
    ).read_bytes()


def test_kill_during_a_raw_copy_leaves_no_truncated_raw_file(tmp_path):
    raw = tmp_path / "raw" / "county_data.csv.gz"

    def child(hold):
        def half(source, target, *args, **kwargs):
            data = source.read()
            target.write(data[: len(data) // 2])
            target.flush()
            hold()

        shutil.copyfileobj = half
        CountySeries(tmp_path)

    assert _interrupted(child, signal.SIGKILL) == -signal.SIGKILL
    assert not raw.exists()  # never a part under the real name
    (stale,) = raw.parent.glob(".county_data.csv.gz.*.incomplete")
    assert 0 < stale.stat().st_size < len(_bundled_county_data())
    assert len(CountySeries(tmp_path)) == 14  # the next load copies it again
    assert raw.read_bytes() == _bundled_county_data()
    assert [p.name for p in raw.parent.iterdir()] == [raw.name]


@pytest.mark.parametrize(
    ("damage", "said"),
    [("truncated", "bytes where the bundled file has"), ("one byte changed", "its bytes differ")],
)
def test_a_damaged_raw_file_is_copied_again(tmp_path, caplog, damage, said):
    """A raw copy cut short (by an older version) or damaged on disk: re-copied with a
    warning, whether or not force_reload is given."""
    CountySeries(tmp_path)
    raw = tmp_path / "raw" / "county_data.csv.gz"
    good = raw.read_bytes()
    for force_reload in (True, False):
        if damage == "truncated":
            raw.write_bytes(good[: len(good) // 3])
        else:
            raw.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
        if not force_reload:
            shutil.rmtree(tmp_path / "processed")  # the raw file is read only to process
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lpm_graph.datasets"):
            assert len(CountySeries(tmp_path, force_reload=force_reload)) == 14
        assert raw.read_bytes() == good
        assert f"the raw file {raw} is damaged" in caplog.text and said in caplog.text


# ---------------------------------------------------------------------------- the command line

RUN = ["run", "--dataset", "synthetic:200", "--no-progress"]


def _visible(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_run_keeps_the_earlier_run(tmp_path, signum):
    out = tmp_path / "out"
    assert cli.main([*RUN, "--steps", "3", "--output", str(out)]) == 0
    before = _files(out)
    assert sorted(before) == ["epidemic.png", "results.csv", "run.json"]
    assert json.loads(before["run.json"])["complete"] is True

    def child(hold):
        def cut(traj, path):  # results.csv stops after two whole rows
            path.write_text("t,S,I,R\n0,190,10,0\n1,185,13,2\n")
            hold()

        cli._write_table = cut
        return cli.main([*RUN, "--steps", "9", "--output", str(out)])

    status = _interrupted(child, signum)
    assert status == (130 if signum == signal.SIGINT else -signal.SIGKILL)
    assert _visible(out) == before  # the earlier run, whole; no new file beside it
    staging = [p.name for p in out.iterdir() if p.name.startswith(".lpm-graph-run.")]
    assert len(staging) == (0 if signum == signal.SIGINT else 1)  # Ctrl-C cleans up
    assert cli.main([*RUN, "--steps", "5", "--output", str(out)]) == 0  # cleans a killed one
    after = _files(out)
    assert sorted(after) == ["epidemic.png", "results.csv", "run.json"]
    assert json.loads(after["run.json"])["arguments"]["steps"] == 5
    assert after["results.csv"].decode().splitlines()[-1].startswith("5,")


def test_a_rerun_without_a_plot_removes_the_old_plot(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "notes.txt").write_text("mine")  # not the command's: left alone
    assert cli.main([*RUN, "--steps", "2", "--output", str(out)]) == 0
    old = json.loads((out / "run.json").read_text())
    del old["complete"]  # a run.json from before the flag is still an earlier run
    (out / "run.json").write_text(json.dumps(old))
    monkeypatch.setattr(cli, "_plot_run", lambda *args: None)
    assert cli.main([*RUN, "--steps", "4", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "results.csv", "run.json"]
    record = json.loads((out / "run.json").read_text())
    assert record["files"]["plot"] is None and record["complete"] is True
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("argv", "files", "message"),
    [
        (RUN, {"results.csv": "my,own\n1,2\n"}, "holds results.csv but no run.json written by"),
        (RUN, {"run.json": '{"name": "mine"}', "epidemic.png": "x"}, "holds run.json, epidemic"),
        (RUN, {"run.json": '{"command": "run", "compl'}, "holds run.json but no run.json"),
        (["calibrate"], {"results.json": "{}", "x": "y"}, "no results.json written by"),
        (["bench", "--agents", "10"], {"bench.json": "[]"}, "no bench.json written by"),
    ],
    ids=["a user's results.csv", "another run.json", "a cut run.json", "calibrate", "bench"],
)
def test_a_folder_that_is_not_an_lpm_graph_output_is_refused(tmp_path, capsys, argv, files,
                                                             message):  # fmt: skip
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = _files(out)
    assert cli.main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"output folder {str(out)!r}" in err and message in err and "--output" in err
    assert _files(out) == before
    (tmp_path / "file").write_text("x")
    assert cli.main([*argv, "--output", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_a_folder_being_written_by_a_live_run_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / temporary_name(".lpm-graph-run.", ".incomplete")).mkdir()  # this live process's
    assert cli.main([*RUN, "--steps", "2", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"is being written by another `lpm-graph run` (process {os.getpid()}," in err
    assert sorted(p.name for p in out.iterdir())[0].startswith(".lpm-graph-run.")
