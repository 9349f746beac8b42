"""A Dataset base that follows PyG's contract, with a cache keyed by the dataset's arguments."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar

from torch_geometric.data import HeteroData

from ..graph import PopulationGraph
from ..graph.storage import atomic_save, atomic_write, load_checked

__all__ = ["Dataset", "default_root"]

log = logging.getLogger(__name__)

Transform = Callable[[Any], Any]


def default_root(name: str) -> Path:
    """``$LPM_GRAPH_DATA/<name>``, else ``~/.cache/lpm-graph/<name>``."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            f"name must be one folder name such as 'CountySeries', got {name!r} (a path would "
            "put the cache outside the lpm-graph data folder)."
        )
    base = os.environ.get("LPM_GRAPH_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "lpm-graph") / name


class Dataset:
    """Base class for lpm-graph datasets, following ``torch_geometric.data.Dataset``.

    A subclass names its ``raw_file_names`` and ``processed_file_names``, fetches raw files in
    :meth:`download` (bundled data is copied from the package: nothing is downloaded) and turns
    them into items in :meth:`process`, which ends with
    ``self.save(items, self.processed_paths[0])``.
    ``dataset[i]`` returns item ``i`` (a :class:`~lpm_graph.PopulationGraph` for graph datasets)
    passed through ``transform``; ``pre_transform`` runs once, before the items are cached.

    The cache differs from PyG's in one way: the processed files carry a digest of the
    dataset's arguments (:meth:`cache_args`, the class name and ``repr(pre_transform)``) in
    their names, so changing an argument processes again into new files instead of silently
    reusing the old ones (PyG only warns). Older processed files are left where they are.
    Files are written to a temporary name and renamed into place, so a failure never leaves a
    damaged cache or touches the raw files. Raw files bundled with the package
    (:meth:`bundled_file`) are copied the same way, and a raw copy that differs from its
    bundled file (a copy cut short by an older version, a damaged disk) is copied again, with a
    warning in the log, before processing.

    Args:
        root: folder holding ``raw/`` and ``processed/``. ``None`` uses the default root
            (:func:`default_root`; set ``$LPM_GRAPH_DATA`` to move it). ``False`` keeps
            everything in memory and writes nothing.
        transform: applied to each item on access.
        pre_transform: applied to each item once, before caching.
        force_reload: process again even if a cached copy exists.
    """

    item_type: ClassVar[type] = PopulationGraph
    """The class of the items; non-graph items provide ``to_dict()`` and ``from_dict()``."""
    version: ClassVar[int] = 1
    """Bump to invalidate every cached copy when ``process`` changes what it produces."""

    def __init__(
        self,
        root: str | Path | None | bool = None,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        force_reload: bool = False,
    ) -> None:
        if root is True or not (root is None or root is False or isinstance(root, (str, Path))):
            raise ValueError(
                f"root must be a folder (str or Path), None (the default cache) or False (in "
                f"memory, no files), got {root!r}."
            )
        for name, fn in (("transform", transform), ("pre_transform", pre_transform)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a callable (item -> item) or None, got {fn!r}.")
        if root is None:
            root = default_root(type(self).__name__)
        self.root: Path | None = None if root is False else Path(root).expanduser()
        self.transform = transform
        self.pre_transform = pre_transform
        self._items: list[Any] | None = None
        if self.root is None:
            self.process()
        else:
            self._prepare(force_reload)
        if self._items is None:
            raise RuntimeError(
                f"{type(self).__name__}.process() did not call self.save(items, ...); "
                "every process() must end by saving its items."
            )

    # ------------------------------------------------------------------ the PyG contract
    @property
    def raw_file_names(self) -> Sequence[str]:
        """Files in ``raw_dir`` that :meth:`process` reads (none by default)."""
        return []

    @property
    def processed_file_names(self) -> Sequence[str]:
        return ["data.pt"]

    def download(self) -> None:
        """Put the missing raw files into ``raw_dir``: copy the bundled ones
        (:meth:`bundled_file`, all-or-nothing); any other is an error naming it."""
        missing = [(n, p) for n, p in zip(self.raw_file_names, self.raw_paths) if not p.exists()]
        absent = [str(p) for n, p in missing if self.bundled_file(n) is None]
        if absent:
            raise ValueError(
                f"{type(self).__name__} needs the raw files {absent}; copy them there "
                "(nothing can be downloaded)."
            )
        for name, path in missing:
            with self.bundled_file(name).open("rb") as source:  # type: ignore[union-attr]
                atomic_write(path, lambda target: shutil.copyfileobj(source, target))

    def bundled_file(self, name: str) -> Traversable | None:
        """The file in the package that the raw file ``name`` is a copy of (``None``: it is
        not bundled). :meth:`download` copies it; a raw copy that differs from it is replaced."""
        return None

    def process(self) -> None:
        """Read the raw files, build the items and ``self.save(items, self.processed_paths[0])``."""
        raise NotImplementedError

    def cache_args(self) -> dict[str, Any]:
        """The arguments that decide what :meth:`process` produces (JSON-serialisable)."""
        return {}

    # ------------------------------------------------------------------ paths
    @property
    def raw_dir(self) -> Path:
        return self._root() / "raw"

    @property
    def processed_dir(self) -> Path:
        return self._root() / "processed"

    @property
    def raw_paths(self) -> list[Path]:
        return [self.raw_dir / name for name in self.raw_file_names]

    @property
    def processed_paths(self) -> list[Path]:
        """``processed_dir / <name>-<digest><suffix>`` for each processed file name."""
        key = self.cache_key
        out = []
        for name in self.processed_file_names:
            p = Path(name)
            out.append(self.processed_dir / f"{p.stem}-{key}{p.suffix}")
        return out

    @property
    def cache_key(self) -> str:
        """12 hex digits of the SHA-256 of the class, version, arguments and pre_transform."""
        return hashlib.sha256(self._cache_description().encode()).hexdigest()[:12]

    def _cache_description(self) -> str:
        return json.dumps(
            {
                "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "version": self.version,
                "args": self.cache_args(),
                "pre_transform": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(self.pre_transform)),
            },
            sort_keys=True,
            default=str,
        )

    def _root(self) -> Path:
        if self.root is None:
            raise ValueError(f"{type(self).__name__} was built with root=False: it has no files.")
        return self.root

    # ------------------------------------------------------------------ save / load
    def save(self, items: Sequence[Any], path: str | Path | None) -> None:
        """Apply ``pre_transform``, keep the items, and cache them at ``path``.

        ``path`` is ignored (may be None) for an in-memory dataset (``root=False``)."""
        items = list(items)
        if self.pre_transform is not None:
            items = [self.pre_transform(item) for item in items]
        self._items = items
        if self.root is not None and path is not None:
            payload = {"format": self._cache_description(), "items": [_encode(i) for i in items]}
            atomic_save(payload, path)
            meta = json.dumps(json.loads(self._cache_description()), indent=2) + "\n"
            atomic_write(Path(path).with_suffix(".json"), meta.encode())

    def load(self, path: str | Path) -> list[Any]:
        payload = load_checked(
            path,
            self._cache_description(),
            what="a cache written by this dataset with these arguments",
            fix="delete it, or pass force_reload=True, to process the raw files again",
        )
        return [self._decode(item) for item in payload["items"]]

    def _prepare(self, force_reload: bool) -> None:
        processed = self.processed_paths
        if not force_reload and all(p.exists() for p in processed):
            try:
                self._items = self.load(processed[0])
                log.debug("%s: loaded the processed cache %s", type(self).__name__, processed[0])
                return
            except Exception as err:  # a damaged or foreign file: process again, say so
                log.warning("%s: re-processing, the cache was unreadable (%s)", self, err)
        self._remove_damaged_raw()
        if not all(p.exists() for p in self.raw_paths):
            self.raw_dir.mkdir(parents=True, exist_ok=True)
            self.download()
        log.info("%s: processing into %s", type(self).__name__, self.processed_dir)
        self.processed_dir.mkdir(parents=True, exist_ok=True)
        self.process()

    def _remove_damaged_raw(self) -> None:
        """Delete the raw copies of bundled files whose size or bytes differ from the
        bundled file's, so that :meth:`download` copies them again."""
        for name, path in zip(self.raw_file_names, self.raw_paths):
            source = self.bundled_file(name)
            if source is None or not path.is_file():
                continue
            expected = source.read_bytes()
            size = path.stat().st_size
            if size == len(expected) and path.read_bytes() == expected:
                continue
            why = (
                f"{size:,} bytes where the bundled file has {len(expected):,}"
                if size != len(expected)
                else "its bytes differ from the bundled file's"
            )
            log.warning("%s: the raw file %s is damaged (%s); copying it again", self, path, why)
            path.unlink()

    def _decode(self, payload: dict[str, Any]) -> Any:
        if payload["kind"] == "graph":
            return PopulationGraph(HeteroData.from_dict(payload["data"]))
        return self.item_type.from_dict(payload["data"])  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ access
    def len(self) -> int:
        return len(self._items or [])

    def get(self, idx: int) -> Any:
        return self._items[idx]  # type: ignore[index]

    def __len__(self) -> int:
        return self.len()

    def __getitem__(self, idx: int) -> Any:
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeError(f"{type(self).__name__} indices are ints, got {type(idx).__name__}.")
        n = self.len()
        if not -n <= idx < n:
            raise IndexError(f"index {idx} out of range for {type(self).__name__} of length {n}.")
        item = copy.copy(self.get(idx % n))  # as PyG: changing dataset[0] leaves the cache alone
        return item if self.transform is None else self.transform(item)

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.len()):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.len()})"


def _encode(item: Any) -> dict[str, Any]:
    if isinstance(item, PopulationGraph):
        return {"kind": "graph", "data": item.data.to_dict()}
    if hasattr(item, "to_dict"):
        return {"kind": type(item).__qualname__, "data": item.to_dict()}
    raise TypeError(
        f"cannot cache an item of type {type(item).__name__}; items are PopulationGraphs or "
        "objects with to_dict() / from_dict()."
    )
