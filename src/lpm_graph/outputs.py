"""A folder of results replaced all together: the outputs of the ``lpm-graph`` commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .graph.storage import atomic_write, fsync_folder, remove_stale_temporaries, temporary_name

__all__ = ["OutputFolder"]


class OutputFolder:
    """The files one command writes into the folder ``path``, replaced all together.

    The new files are written into a hidden staging folder inside ``path``
    (``.lpm-graph-<command>.<host>-<pid>.<hex>.incomplete``) and moved into place only once
    all of them are written, the JSON ``record`` last, with ``"complete": true``. Until then
    an earlier output in ``path`` is untouched: an exception, Ctrl-C or ``kill -9`` while
    writing leaves it whole (a killed process also leaves its staging folder, which the next
    write into ``path`` removes). Ctrl-C during the moves (a few renames) is deferred until
    they are done; were the process killed among them, ``record`` says ``"complete": false``.
    Files in ``path`` that are not the command's are never touched.

    Usage::

        out = OutputFolder("results", "run", "run.json", ["results.csv"])  # before the work
        with out.writing() as stage:
            write(stage / "results.csv")
            out.commit({"arguments": ...})

    Args:
        path: the folder (created when the output is committed).
        command: the command's name, stored in the record as ``"command"``.
        record: the name of the JSON record that describes the output and marks it complete.
        files: the other files the command may write; one of an earlier output that the new
            one does not write is removed.
        legacy: keys that identify a record written before records named their command.

    Raises:
        ValueError: at construction, before any work: ``path`` is not a folder; it holds one
            of the command's files but no record of the command (it is not an lpm-graph
            output, and nothing of it is replaced); or a live process is writing there.
    """

    def __init__(
        self,
        path: str | Path,
        command: str,
        record: str,
        files: Sequence[str] = (),
        *,
        legacy: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self.command = command
        self.record = record
        self.files = tuple(files)
        self.legacy = tuple(legacy)
        self._prefix = f".lpm-graph-{command}."
        self._stage: Path | None = None
        self.check()

    def check(self) -> None:
        """Refuse a folder whose files this command must not replace (see the class)."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"output folder {str(path)!r} is a file; give a folder (--output), new or one "
                f"that holds an earlier output of `lpm-graph {self.command}`."
            )
        if not path.is_dir():
            return
        remove_stale_temporaries(path, self._prefix, ".incomplete")
        busy = [e.name for e in path.iterdir() if e.name.startswith(self._prefix)]
        if busy:
            pid = re.search(r"-(\d+)\.[0-9a-f]+\.incomplete$", busy[0])
            raise ValueError(
                f"output folder {str(path)!r} is being written by another `lpm-graph "
                f"{self.command}` (process {pid[1] if pid else '?'}, staging folder {busy[0]}); "
                "wait for it to finish or choose another folder (--output)."
            )
        if self._is_ours():
            return
        clash = [n for n in (self.record, *self.files) if (path / n).exists()]
        if clash:
            raise ValueError(
                f"output folder {str(path)!r} holds {', '.join(clash)} but no {self.record} "
                f"written by `lpm-graph {self.command}`: it is not an lpm-graph output, and "
                "those files are not replaced. Choose another folder (--output), or move "
                "them away."
            )

    def _is_ours(self) -> bool:
        try:
            record = json.loads((self.path / self.record).read_text())
        except (OSError, ValueError):  # missing, unreadable or not JSON
            return False
        if not isinstance(record, dict):
            return False
        if "command" in record:
            return record["command"] == self.command
        return bool(self.legacy) and all(key in record for key in self.legacy)

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """A fresh staging folder for the new files; removed on leaving, committed or not."""
        self.check()
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self._stage = self.path / temporary_name(self._prefix, ".incomplete")
        self._stage.mkdir()
        try:
            yield self._stage
        finally:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
            if created and not any(self.path.iterdir()):  # nothing was committed
                self.path.rmdir()

    def commit(self, record: dict[str, Any]) -> None:
        """Write ``record`` (with ``"command"`` and ``"complete": true``) and move the staged
        files into place, the record last; remove the command's files not staged."""
        stage = self._stage
        if stage is None:
            raise RuntimeError("OutputFolder.commit() belongs inside `with out.writing():`.")
        record = {"command": self.command, **record, "complete": True}
        (stage / self.record).write_text(json.dumps(record, indent=2, default=str) + "\n")
        for entry in stage.iterdir():
            with entry.open("rb") as handle:
                os.fsync(handle.fileno())
        with _ctrl_c_deferred():
            marker = {"command": self.command, "complete": False}
            atomic_write(self.path / self.record, (json.dumps(marker) + "\n").encode())
            for name in self.files:
                if (stage / name).exists():
                    os.replace(stage / name, self.path / name)
                else:
                    (self.path / name).unlink(missing_ok=True)
            os.replace(stage / self.record, self.path / self.record)
            fsync_folder(self.path)


@contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until its end (main thread)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield  # (None: a handler set outside Python, which cannot be put back)
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # now, to the handler put back
