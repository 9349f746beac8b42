"""Durable files: all-or-nothing writes, checked reads, and saving / loading PopulationGraphs.

A file is written to a temporary name in its folder, flushed to disk and renamed over its
destination, and the folder is flushed too: whatever happens (an exception, Ctrl-C,
``kill -9``, a power cut after the call returned), the destination holds either the earlier
file or the whole new one. Temporary names are ``.<name>.<host>-<pid>.<hex>.incomplete``; one
left by a process that was killed is removed by the next write of the same file on the same
machine (one of a live process, or of another machine sharing the folder, is left alone).

Files are read back with ``torch.load(weights_only=True)`` (no code in a file runs); a
truncated or garbage file is a ``ValueError`` that names it as damaged.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch_geometric.data import HeteroData

from .population import PopulationGraph

__all__ = [
    "atomic_save",
    "atomic_write",
    "fsync_folder",
    "load_checked",
    "load_graph",
    "remove_stale_temporaries",
    "save_graph",
    "temporary_name",
]

log = logging.getLogger(__name__)

FORMAT = "lpm-graph/population-graph/1"


def save_graph(graph: PopulationGraph, path: str | Path) -> None:
    """Write ``graph`` (node counts, attributes, edges, graph-level values) to ``path``.

    The write is all-or-nothing (:func:`atomic_write`): an interrupted save never leaves a
    damaged file where a good one was. An existing file at ``path`` is replaced. Read it back
    with :func:`load_graph`.
    """
    atomic_save({"format": FORMAT, "data": graph.data.to_dict()}, path)


def load_graph(path: str | Path) -> PopulationGraph:
    """Read a graph written by :func:`save_graph` (``weights_only`` loading: no code runs).

    Raises:
        ValueError: the file is damaged (truncated, garbage) or was not written by
            :func:`save_graph`; the message names it.
    """
    payload = load_checked(
        path,
        FORMAT,
        what="a PopulationGraph file written by lpm_graph.graph.save_graph",
        fix="delete it and save the graph again (save_graph)",
    )
    return PopulationGraph(HeteroData.from_dict(payload["data"]))


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path``, all-or-nothing (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write(path: str | Path, content: bytes | Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` all-or-nothing: ``content`` (bytes, or a function that writes to a binary
    file handle) goes to a temporary file in the same folder, which is fsynced and renamed over
    ``path``; then the folder is fsynced, so the rename survives a power cut.

    On any failure (Ctrl-C included) the temporary file is removed and ``path`` is untouched.
    Temporary files of ``path`` left by killed processes on this machine are removed first.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder, f".{path.name}.", ".incomplete")
    tmp = folder / temporary_name(f".{path.name}.", ".incomplete")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(folder)


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (new and renamed files) to disk. A no-op off POSIX, where a
    folder cannot be opened, and on file systems that refuse it."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some network file systems refuse to fsync a folder
        log.debug("could not fsync the folder %s: %s", folder, err)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- temporaries


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temporary_name(prefix: str, suffix: str) -> str:
    """A fresh name ``<prefix><host>-<pid>.<hex><suffix>`` for a temporary file or folder,
    which :func:`remove_stale_temporaries` recognises once this process has died."""
    return f"{prefix}{_host()}-{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _alive(pid: int) -> bool:
    if os.name != "posix":  # on Windows os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | Path, prefix: str, suffix: str) -> list[Path]:
    """Remove the files and folders named by :func:`temporary_name` ``(prefix, suffix)`` in
    ``folder`` whose process (on this machine) is dead; return them.

    Those of a live process, of another machine, or that do not parse are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(prefix)}(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[0-9a-f]+")
    host, removed = _host(), []
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(suffix):
            continue
        match = pattern.fullmatch(name[: len(name) - len(suffix)])
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        log.info("removed %s, left by a killed process (pid %s)", entry, match["pid"])
        removed.append(entry)
    return removed


# ---------------------------------------------------------------------------- reading


def load_checked(path: str | Path, format: str, *, what: str, fix: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a dict whose ``"format"`` is ``format``.

    Args:
        path: the file.
        format: the format tag the writer put into the dict.
        what: what the file should be, for messages ("a checkpoint written by ...").
        fix: what to do about a damaged or foreign file, for messages.

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError: as ``open`` raises them.
        ValueError: the file is damaged (truncated, garbage), holds Python objects other than
            tensors and plain values, or has another format; the message names it and ``fix``.
    """
    path = Path(path)
    try:
        payload = torch.load(path, weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (pickle.UnpicklingError, EOFError, OSError, KeyError, ValueError, IndexError) as err:
        reason = f"{type(err).__name__}: {err}" if str(err) else "it ends early"
        if isinstance(err, pickle.UnpicklingError):  # not torch's advice to load it unsafely
            reason = str(err).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0]
            if "Unsupported global" in reason:  # a pickle of objects: not ours, and unsafe
                raise ValueError(
                    f"{path} is not {what}: it holds Python objects ({reason}), which "
                    "lpm-graph does not load (it reads files with weights_only=True, so no "
                    f"code runs); {fix}."
                ) from None
        raise ValueError(f"{path} is damaged: not a whole torch file ({reason}); {fix}.") from None
    except RuntimeError as err:
        if "device" in str(err):  # e.g. CUDA tensors on a machine without CUDA: not damage
            raise
        reason = str(err).split(". ", 1)[0]  # then torch's guesses about the file
        raise ValueError(f"{path} is damaged: not a whole torch file ({reason}); {fix}.") from None
    if not isinstance(payload, dict) or payload.get("format") != format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not {what} (format {found!r}); {fix}.")
    return payload
