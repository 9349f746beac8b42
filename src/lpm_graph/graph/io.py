"""Readers for the files users have: edge lists (text or Parquet) and node tables (CSV or Parquet).

Every reader checks the whole file before it builds anything, so a failure leaves no partly
built graph and never changes a graph passed in. Errors are ``ValueError``s that name the file,
the line (``path:line`` or ``path:line:column`` for text; ``row k`` for Parquet, counted from
0) and the fix.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from .population import (
    DEFAULT_EDGE_TYPE,
    DEFAULT_NODE_TYPE,
    PopulationGraph,
    _check_node_tensor,
    _check_num_nodes,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["NodeTable", "attach_node_table", "from_files", "read_edge_list", "read_node_table"]

FileFormat = Literal["csv", "parquet"]
"""``"csv"``: delimited text (comma, tab or whitespace; ``.gz`` read transparently)."""

ColumnDtype = torch.dtype | str | type
"""A torch dtype, one of :data:`COLUMN_DTYPES`, or ``str`` (same as ``"category"``)."""

COLUMN_DTYPES: dict[str, torch.dtype | str] = {
    "int64": torch.int64,
    "int32": torch.int32,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
    "category": "category",
}

# Characters str.splitlines() breaks on but numpy's loadtxt does not (it reads them as
# whitespace); a file holding one takes the line-by-line path so both paths read it the same.
_EXTRA_LINE_BREAKS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")
_TRUE, _FALSE = ("true", "1"), ("false", "0")
_NUMPY = {torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_}


# ---------------------------------------------------------------------------- edge lists


@dataclass
class _Edges:
    """Edges read from a file, before any graph is built."""

    src: np.ndarray  # [E] int64
    dst: np.ndarray  # [E] int64
    weight: np.ndarray | None  # [E] float64
    locate: Callable[[int], str]  # edge position -> "line 7: '3,9'" / "row 6"


def read_edge_list(
    path: str | Path,
    *,
    num_nodes: int | None = None,
    delimiter: str | None = None,
    undirected: bool = False,
    weighted: bool = False,
    skip_header: bool | None = None,
    format: FileFormat | None = None,
    columns: tuple[str, str] | None = None,
    weight_column: str | None = None,
    node_type: str = DEFAULT_NODE_TYPE,
    edge_type: str = DEFAULT_EDGE_TYPE,
    **kwargs: Any,
) -> PopulationGraph:
    """Read an edge list: ``src<delim>dst[<delim>weight]`` text lines or a Parquet table.

    Args:
        path: the file (``.gz`` text is read transparently; ``.parquet`` is read as Parquet).
        num_nodes: number of agents; default ``max id + 1``.
        delimiter: text only: ``","``, ``"\\t"``, ... ; default: comma if the first data line
            has one, else whitespace.
        undirected: each line is one undirected contact (both directions are added and the
            relation is marked ``undirected``).
        weighted: read a weight (text: the third column) as ``edge_weight`` (default float
            dtype).
        skip_header: text only: skip the first line; default: skip it when it is not numeric.
        format: ``"csv"`` (any delimited text) or ``"parquet"``; default from the suffix.
        columns: Parquet only: the ``(source, destination)`` id columns; default: the first
            two integer columns.
        weight_column: Parquet only: the weight column (implies ``weighted``); with
            ``weighted=True`` and no name, the first numeric column after the id columns.
        node_type: name of the node type.
        edge_type: name of the relation.
        **kwargs: other keyword arguments, passed to
            :meth:`PopulationGraph.from_edge_index`.

    Text lines starting with ``#`` and blank lines are ignored, and so are columns after
    ``src, dst`` (``src, dst, weight`` when ``weighted``). A file without edges (empty, or a
    header only) is an error unless ``num_nodes`` is given (nodes without contacts). Plain
    ASCII files with no ``#`` inside a line are parsed in bulk by numpy's C reader (a
    10,000,000-line file in about a second); other files, and any file the bulk reader
    rejects, are read line by line, so a malformed line raises a ValueError naming the file,
    the line number and the content. An id outside ``[0, num_nodes)`` names its line too.
    Parquet needs ``pip install "lpm-graph[parquet]"``.
    """
    path = _path(path, "path")
    edges = _load_edges(
        path,
        delimiter=delimiter,
        weighted=weighted,
        skip_header=skip_header,
        format=format,
        columns=columns,
        weight_column=weight_column,
    )
    return _edge_graph(
        edges,
        path,
        num_nodes,
        undirected=undirected,
        node_type=node_type,
        edge_type=edge_type,
        **kwargs,
    )


def _load_edges(
    path: Path,
    *,
    delimiter: str | None,
    weighted: bool,
    skip_header: bool | None,
    format: FileFormat | None,
    columns: tuple[str, str] | None,
    weight_column: str | None,
) -> _Edges:
    if _file_format(path, format) == "parquet":
        if delimiter is not None or skip_header is not None:
            raise ValueError(
                f"{path}: delimiter= and skip_header= are for text edge lists; a Parquet file "
                "names its columns (pass columns=(src, dst) and weight_column=)."
            )
        return _parquet_edges(path, columns, weight_column, weighted)
    if columns is not None or weight_column is not None:
        raise ValueError(
            f"{path}: columns= and weight_column= are for Parquet edge lists; a text edge list "
            "is read by position (src, dst[, weight]): reorder its columns, or convert it."
        )
    return _text_edges(path, _check_delimiter(delimiter), weighted, skip_header)


ABSURD_ID_FACTOR = 1000
ABSURD_ID_FLOOR = 10_000_000
"""Without ``num_nodes``, an edge list whose largest id exceeds both 10 million and 1,000
times the ids it holds is refused as absurd (``num_nodes=`` says it is meant)."""


def _edge_graph(
    edges: _Edges,
    path: Path,
    num_nodes: int | None,
    *,
    context: str = "",
    **kwargs: Any,
) -> PopulationGraph:
    """Check the ids against ``num_nodes`` (naming the line) and build the graph."""
    src, dst = edges.src, edges.dst
    if num_nodes is None and not src.size:  # an empty file, or a header (comments) only
        raise ValueError(
            f"edge list {str(path)!r} has no edges; expected 'src,dst' lines (or pass "
            "num_nodes= for a graph of nodes without contacts)."
        )
    if num_nodes is None:
        num_nodes = int(max(src.max(), dst.max())) + 1
        # ids far beyond what the file could number (an id like 100000000000000 would make a
        # graph of 1e14 nodes, almost all without a contact): name the line instead
        limit = max(ABSURD_ID_FLOOR, ABSURD_ID_FACTOR * 2 * src.size)
        if num_nodes > limit:
            ids = np.maximum(src, dst)
            pos = int(ids.argmax())
            raise ValueError(
                f"{path}: node id {int(ids[pos])} ({edges.locate(pos)}) would make a graph of "
                f"{num_nodes:,} nodes for {src.size:,} edges; node ids must be 0..N-1. Relabel "
                "the ids to 0..N-1, or pass num_nodes= if the graph really has that many "
                "nodes."
            )
    num_nodes = _check_num_nodes(num_nodes)
    bad_src, bad_dst = (src < 0) | (src >= num_nodes), (dst < 0) | (dst >= num_nodes)
    bad = bad_src | bad_dst
    if bool(bad.any()):
        pos = int(bad.argmax())
        label, value = ("source", src[pos]) if bad_src[pos] else ("destination", dst[pos])
        raise ValueError(
            f"{path}: edge_index has {label} id {value} at edge {pos}, outside "
            f"[0, {num_nodes}) ({edges.locate(pos)}); node ids must be 0..{num_nodes - 1}"
            + (context or " (pass the right num_nodes or relabel).")
        )
    edge_index = torch.from_numpy(np.stack([src, dst]))
    weight = None
    if edges.weight is not None:
        weight = torch.from_numpy(edges.weight).to(torch.get_default_dtype())
    try:
        return PopulationGraph.from_edge_index(edge_index, num_nodes, edge_weight=weight, **kwargs)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _text_edges(
    path: Path, delimiter: str | None, weighted: bool, skip_header: bool | None
) -> _Edges:
    data = _read_bytes(path, "edge list")
    fast = data.isascii() and not any(b in data for b in _EXTRA_LINE_BREAKS)
    head = _ascii_lines(data) if fast else _decode(data, path).splitlines()
    found = next(
        ((k, line) for k, line in enumerate(head) if line.strip() and not line.startswith("#")),
        None,
    )
    if found is None:  # no line at all: read as a header-only file is (no edges)
        empty = np.zeros(0, dtype=np.int64)
        return _Edges(empty, empty, np.zeros(0) if weighted else None, lambda pos: "line ?")
    first, first_line = found
    if delimiter is None:
        delimiter = "," if "," in first_line else None
    if skip_header is None:
        tokens = first_line.split(delimiter)
        skip_header = not all(_is_number(tok) for tok in tokens[:2])

    def locate(pos: int) -> str:  # only called on an error: re-scans the lines
        lines = _decode(data, path).splitlines()
        for lineno, line in _data_lines(lines, first, skip_header):
            pos -= 1
            if pos < 0:
                return f"line {lineno}: {line!r}"
        return "line ?"

    table = None
    if fast:  # numpy reads a path fastest; a decompressed .gz goes through a text wrapper
        stream = str(path) if path.suffix != ".gz" else io.TextIOWrapper(io.BytesIO(data))
        # numpy's "#" starts a comment anywhere in a line; ours only at its start
        at_line_start = data.startswith(b"#") + data.count(b"\n#") + data.count(b"\r#")
        comments = "#" if data.count(b"#") == at_line_start else None
        table = _bulk_edges(stream, first + skip_header, delimiter, weighted, comments)
    if table is None:  # unusual layout or a malformed line: the line-by-line reader decides
        text = _decode(data, path)
        table = _scan_edges(path, text, first, delimiter, weighted, skip_header)
    src, dst, weight = table
    return _Edges(src, dst, weight, locate)


def _ascii_lines(data: bytes) -> Iterator[str]:
    """``data.decode().splitlines()``, lazily, for ASCII text without the rarer line breaks."""
    start = 0
    for match in re.finditer(rb"\r\n|\r|\n", data):
        yield data[start : match.start()].decode()
        start = match.end()
    if start < len(data):
        yield data[start:].decode()


def _bulk_edges(
    stream: str | io.TextIOBase,
    skiprows: int,
    delimiter: str | None,
    weighted: bool,
    comments: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """numpy's C parser (``loadtxt``) over the whole file; None when it declines, and the
    line-by-line scanner then reads (or rejects) the file. It is only given files it reads
    exactly as the scanner does (plain ASCII, ``#`` only at line starts).
    """
    dtype = [("src", "<i8"), ("dst", "<i8")] + ([("weight", "<f8")] if weighted else [])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": the scanner decides
            table = np.loadtxt(
                stream,
                dtype=dtype,
                delimiter=delimiter,
                comments=comments,
                skiprows=skiprows,
                usecols=range(len(dtype)),
                ndmin=1,
            )
    except (ValueError, OverflowError):
        return None
    if table.size == 0:
        return None
    return table["src"], table["dst"], (table["weight"] if weighted else None)


def _data_lines(lines: Sequence[str], first: int, skip_header: bool) -> Any:
    for lineno, line in enumerate(lines, start=1):
        if (skip_header and lineno - 1 == first) or not line.strip() or line.startswith("#"):
            continue
        yield lineno, line


def _scan_edges(
    path: Path, text: str, first: int, delimiter: str | None, weighted: bool, skip_header: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The line-by-line reader: the reference semantics, and the one that names bad lines."""
    lines = text.splitlines()
    ncols = 3 if weighted else 2
    src, dst, wts = [], [], []
    for lineno, line in _data_lines(lines, first, skip_header):
        parts = line.split(delimiter)
        if len(parts) < ncols:
            raise ValueError(
                f"{path}:{lineno}: expected {ncols} columns "
                f"(src, dst{', weight' if weighted else ''}), "
                f"got {line!r}; fix the line or pass the right delimiter=."
                + _truncation_hint(text, lines, lineno)
            )
        try:
            j, i = int(parts[0]), int(parts[1])
            if weighted:
                wts.append(float(parts[2]))
        except ValueError as err:
            raise ValueError(
                f"{path}:{lineno}: node ids must be integers (and weights numbers), got {line!r}; "
                f"fix the line or relabel the nodes to 0..n-1."
                + _truncation_hint(text, lines, lineno)
            ) from err
        if min(i, j) < -(2**63) or max(i, j) >= 2**63:
            raise ValueError(f"{path}:{lineno}: node id out of the int64 range in {line!r}.")
        src.append(j)
        dst.append(i)
    return (
        np.array(src, dtype=np.int64),
        np.array(dst, dtype=np.int64),
        np.array(wts, dtype=np.float64) if weighted else None,
    )


def _truncation_hint(text: str, lines: Sequence[str], lineno: int) -> str:
    if lineno == len(lines) and not text.endswith(("\n", "\r")):
        return " It is the last line and the file does not end with a newline: is it truncated?"
    return ""


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parquet_edges(
    path: Path, columns: tuple[str, str] | None, weight_column: str | None, weighted: bool
) -> _Edges:
    table = _read_parquet(path)
    names = table.column_names
    if columns is None:
        ids = [name for name in names if _is_int_type(table.schema.field(name).type)]
        if len(ids) < 2:
            raise ValueError(
                f"{path}: needs two integer id columns (source, destination), found "
                f"{len(ids)}; the columns are {_describe_columns(table)}. Pass "
                "columns=(src, dst)."
            )
        columns = (ids[0], ids[1])
    if len(columns) != 2:
        raise ValueError(f"columns must name (source, destination), got {columns!r}.")
    ids = []
    for name in columns:
        col = _parquet_column(table, name, path)
        if not _is_int_type(col.type):
            raise ValueError(
                f"{path}: id column {name!r} holds {col.type}, not integer node ids; pick "
                f"integer columns with columns=(src, dst) (the columns are "
                f"{_describe_columns(table)}) or relabel the nodes to 0..n-1."
            )
        ids.append(_arrow_ints(col, name, path))
    if weighted and weight_column is None:
        weight_column = next(
            (
                n
                for n in names[names.index(columns[1]) + 1 :]
                if n not in columns and _is_numeric_type(table.schema.field(n).type)
            ),
            None,
        )
        if weight_column is None:
            raise ValueError(
                f"{path}: weighted=True but no numeric column follows the id columns; the "
                f"columns are {_describe_columns(table)}. Pass weight_column=."
            )
    weight = None
    if weight_column is not None:
        col = _parquet_column(table, weight_column, path)
        if not _is_numeric_type(col.type):
            raise ValueError(
                f"{path}: weight column {weight_column!r} holds {col.type}, not numbers."
            )
        _no_nulls(col, weight_column, path)
        weight = col.to_numpy().astype(np.float64)
    return _Edges(ids[0], ids[1], weight, lambda pos: f"row {pos}")


# ---------------------------------------------------------------------------- node tables


class NodeTable(dict[str, Tensor]):
    """Per-node tensors from :func:`read_node_table`, row ``k`` for node id ``k``.

    Attributes:
        num_nodes: the number of nodes (rows).
        categories: for each category column, its labels in sorted order: code ``c`` in the
            tensor stands for ``categories[name][c]``.
    """

    def __init__(
        self, tensors: Mapping[str, Tensor], num_nodes: int, categories: dict[str, list[Any]]
    ) -> None:
        super().__init__(tensors)
        self.num_nodes = num_nodes
        self.categories = categories


def read_node_table(
    path: str | Path,
    *,
    id_column: str = "id",
    columns: Mapping[str, ColumnDtype] | None = None,
    num_nodes: int | None = None,
    delimiter: str | None = None,
    format: FileFormat | None = None,
) -> NodeTable:
    """Read one row per node (CSV with a header line, or Parquet) into per-node tensors.

    CSV fields may be quoted (``"east, coast"``) when the delimiter is a comma or a tab;
    lines starting with ``#`` and blank lines are ignored; values are stripped of spaces.

    Args:
        path: the file (``.gz`` CSV read transparently; ``.parquet`` read as Parquet).
        id_column: the column of node ids; every id in ``0..n-1`` must appear exactly once.
            The ids only order the rows: they are not returned as a tensor.
        columns: ``{name: dtype}`` of the columns to read, dtype a torch dtype or one of
            ``"int64"``, ``"int32"``, ``"float32"``, ``"float64"``, ``"bool"``,
            ``"category"`` (or ``str``). Default: every other column, typed from the data
            (integers -> int64, other numbers -> the default float dtype, ``true``/``false``
            -> bool, anything else -> category).
        num_nodes: the number of nodes; default ``max id + 1``.
        delimiter: CSV only; default: comma if the header has one, else tab, else whitespace.
        format: ``"csv"`` or ``"parquet"``; default from the suffix.

    Returns:
        A :class:`NodeTable` (a ``dict[str, Tensor]``, row ``k`` for node ``k``). A category
        column becomes int64 codes into its sorted labels, listed in ``table.categories``.
        Missing values (empty fields, ``nan``, Parquet nulls) are allowed only in float
        columns, where they become NaN.

    Raises:
        ValueError: naming the file, the line and column (Parquet: the row) and the fix for a
            missing column, a non-integer, negative, out-of-range, repeated or missing id, a
            value that does not parse as its dtype, and a line with too few or too many
            fields (a truncated file).
    """
    path = _path(path, "path")
    if columns is not None and not isinstance(columns, Mapping):
        raise ValueError(
            f"columns must map column names to dtypes, e.g. {{'age': 'int64'}}, got "
            f"{columns!r}; leave columns=None to read every column typed from its data."
        )
    if _file_format(path, format) == "parquet":
        if delimiter is not None:
            raise ValueError(f"{path}: delimiter= is for CSV node tables, not Parquet.")
        source: _Source = _ParquetSource(path)
    else:
        source = _CsvSource(path, _check_delimiter(delimiter))
    available = source.names
    if id_column not in available:
        raise ValueError(
            f"{path}: no id column {id_column!r}; the columns are {available}. Pass "
            "id_column= (the first line of a CSV must be a header naming the columns)."
        )
    if columns is None:
        wanted: dict[str, torch.dtype | str | None] = {
            name: None for name in available if name != id_column
        }
    else:
        wanted = {name: _resolve_dtype(name, dtype) for name, dtype in columns.items()}
    for name in wanted:
        if name == "" and "" in available:
            raise ValueError(
                f"{path}: column {available.index('') + 1} has no name in the header "
                f"{available}; name it, or pass id_column='' if it holds the ids (an index "
                "column written by pandas)."
            )
        if name not in available:
            raise ValueError(f"{path}: no column {name!r}; the columns are {available}.")
        if name in (id_column, "num_nodes"):
            raise ValueError(
                f"{path}: column {name!r} cannot be a node attribute "
                f"({'it is the id column' if name == id_column else 'the name is reserved'}); "
                "leave it out of columns= (or rename it in the file)."
            )
    ids = source.ids(id_column)
    if not ids.size:  # alike with an empty file: a table of no node is no table
        raise ValueError(
            f"{path}: the node table has a header but no rows; expected one row per node "
            "(id 0, 1, ...)."
        )
    n, order = _check_ids(ids, num_nodes, source, id_column)
    tensors, categories = {}, {}
    for name, dtype in wanted.items():
        values, labels = source.column(name, dtype)
        tensors[name] = values[order]
        if labels is not None:
            categories[name] = labels
    return NodeTable(tensors, n, categories)


def attach_node_table(
    graph: PopulationGraph,
    path: str | Path,
    *,
    node_type: str | None = None,
    id_column: str = "id",
    columns: Mapping[str, ColumnDtype] | None = None,
    delimiter: str | None = None,
    format: FileFormat | None = None,
) -> None:
    """Read a node table (see :func:`read_node_table`) and attach its columns to ``graph``.

    The table must have one row per node of ``node_type``. A category column ``name`` also
    stores its labels as the list ``graph[node_type].name_categories``. Everything is read and
    checked first: on any error ``graph`` is left exactly as it was.
    """
    node_type = graph._node_type(node_type)
    table = read_node_table(
        path,
        id_column=id_column,
        columns=columns,
        num_nodes=graph.num_nodes(node_type),
        delimiter=delimiter,
        format=format,
    )
    _attach(graph, node_type, table, Path(path))


def _attach(graph: PopulationGraph, node_type: str, table: NodeTable, path: Path) -> None:
    store = graph.data[node_type]
    new = list(table) + [f"{name}_categories" for name in table.categories]
    taken = sorted({name for name in new if name in store or new.count(name) > 1})
    if taken:
        raise ValueError(
            f"{path}: {node_type!r} nodes would get {taken} twice (already there, or a "
            f"column and a category list); delete them first (del graph[{node_type!r}][name]) "
            "or leave those columns out."
        )
    for name, value in table.items():  # check all, then write all
        _check_node_tensor(value, graph.num_nodes(node_type), node_type, name)
    for name, value in table.items():
        store[name] = value
    for name, labels in table.categories.items():
        store[f"{name}_categories"] = labels


def from_files(
    edges: str | Path,
    nodes: str | Path | None = None,
    *,
    num_nodes: int | None = None,
    node_columns: Mapping[str, ColumnDtype] | None = None,
    id_column: str = "id",
    undirected: bool = False,
    weighted: bool = False,
    node_type: str = DEFAULT_NODE_TYPE,
    edge_type: str = DEFAULT_EDGE_TYPE,
    **kwargs: Any,
) -> PopulationGraph:
    """A graph from an edge list file and an optional node table file.

    Args:
        edges: the edge list (see :func:`read_edge_list`).
        nodes: a node table (see :func:`read_node_table`); its columns become node
            attributes (category labels as ``name_categories`` lists).
        num_nodes: the number of agents; default: the node table's size, else
            ``max edge id + 1``. Every edge id must be a node of the table.
        node_columns: as ``columns`` of :func:`read_node_table`.
        id_column: as ``id_column`` of :func:`read_node_table`.
        undirected: as in :func:`read_edge_list`.
        weighted: as in :func:`read_edge_list`.
        node_type: name of the node type.
        edge_type: name of the relation.
        **kwargs: other keyword arguments (``delimiter``, ``format``, ``columns``,
            ``allow_self_loops``, ...), passed to :func:`read_edge_list`.
    """
    table, context = None, ""
    if nodes is not None:
        table = read_node_table(
            nodes, id_column=id_column, columns=node_columns, num_nodes=num_nodes
        )
        num_nodes = table.num_nodes
        context = f", the ids of the node table {str(nodes)!r}; add the node to the table."
    read_keys = ("delimiter", "skip_header", "format", "columns", "weight_column")
    read_kwargs = {key: kwargs.pop(key, None) for key in read_keys}
    edges = _path(edges, "edges")
    loaded = _load_edges(edges, weighted=weighted, **read_kwargs)
    graph = _edge_graph(
        loaded,
        edges,
        num_nodes,
        context=context,
        undirected=undirected,
        node_type=node_type,
        edge_type=edge_type,
        **kwargs,
    )
    if table is not None:
        _attach(graph, node_type, table, Path(nodes))  # type: ignore[arg-type]
    return graph


# ---------------------------------------------------------------------------- column parsing


def _resolve_dtype(name: str, dtype: ColumnDtype) -> torch.dtype | str:
    """The one place a column dtype shortcut is resolved."""
    if dtype is str:
        return "category"
    if isinstance(dtype, str) and dtype in COLUMN_DTYPES:
        return COLUMN_DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in COLUMN_DTYPES.values():
        return dtype
    raise ValueError(
        f"columns[{name!r}]={dtype!r} is not a supported dtype; choose one of "
        f"{', '.join(map(repr, COLUMN_DTYPES))}, str, or the matching torch dtype."
    )


def _check_ids(
    ids: np.ndarray, num_nodes: int | None, source: _Source, id_column: str
) -> tuple[int, Tensor]:
    """Check that ``ids`` are ``0..n-1`` once each; return ``n`` and the rows in id order."""
    path = source.path
    if ids.size and int(ids.min()) < 0:
        k = int(ids.argmin())
        raise ValueError(
            f"{source.where(k, id_column)}: id {ids[k]} is negative; node ids are 0..n-1."
        )
    if num_nodes is not None:
        n = _check_num_nodes(num_nodes)
    else:
        n = int(ids.max()) + 1 if ids.size else 0
    if ids.size and int(ids.max()) >= n:
        k = int(ids.argmax())
        raise ValueError(
            f"{source.where(k, id_column)}: id {ids[k]} is outside [0, {n}) "
            f"(num_nodes={n}); remove the row or pass the right num_nodes."
        )
    order = np.argsort(ids, kind="stable")
    repeat = ids[order[1:]] == ids[order[:-1]]
    if bool(repeat.any()):
        later = order[1:][repeat]
        k = int(later.min())
        first = int(np.flatnonzero(ids == ids[k])[0])
        raise ValueError(
            f"{source.where(k, id_column)}: id {ids[k]} appears again (first at "
            f"{source.where(first, id_column)}); each node has one row."
        )
    if ids.size != n:  # in range and distinct, so some id is missing
        gaps = np.flatnonzero(ids[order] != np.arange(ids.size))
        missing = int(gaps[0]) if gaps.size else ids.size
        raise ValueError(
            f"{path}: {n - ids.size} of the {n} node ids are missing (the first is "
            f"{missing}); the table needs one row for each node 0..{n - 1}"
            + (f" (num_nodes={num_nodes})." if num_nodes is not None else ".")
        )
    return n, torch.from_numpy(order)


def _refuse_stray_text(values: list[str], where: Callable[[int], str], name: str) -> None:
    """A column whose filled cells are mostly numbers but not all is an error naming the
    first cell that is not: typed as a category, ages 5, 10, 30 would silently become the
    codes 2, 0, 1 because of one stray ``unknown``."""
    filled = [k for k, v in enumerate(values) if v.strip()]
    stray = [k for k in filled if not _is_number(values[k])]
    numeric = len(filled) - len(stray)
    if stray and numeric and numeric * 2 >= len(filled):
        bad = stray[0]
        raise ValueError(
            f"{where(bad)}: column {name!r} holds numbers ({numeric} of {len(filled)} "
            f"filled cells) but this cell is {values[bad]!r}; fix it, leave it empty for a "
            f"missing value (float columns), or declare the column a category with "
            f"columns={{{name!r}: 'category'}}."
        )


def _parse_text(
    values: list[str], dtype: torch.dtype | str | None, where: Callable[[int], str], name: str
) -> tuple[Tensor, list[Any] | None]:
    """A text column as a tensor (``dtype=None``: typed from the data)."""
    if dtype is None:
        for guess in (torch.int64, torch.get_default_dtype(), torch.bool):
            try:
                return _parse_text(values, guess, where, name)
            except ValueError:
                continue
        _refuse_stray_text(values, where, name)
        dtype = "category"
    if dtype == "category":
        if "" in values:
            k = values.index("")
            raise ValueError(
                f"{where(k)}: column {name!r} has an empty value; a category column needs a "
                "label on every row (fill it, e.g. 'unknown')."
            )
        labels, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        return torch.from_numpy(codes.astype(np.int64).reshape(-1)), labels.tolist()
    assert isinstance(dtype, torch.dtype)
    parse: Callable[[str], Any] = (
        _parse_float if dtype.is_floating_point else _parse_bool if dtype == torch.bool else int
    )
    try:
        parsed = [parse(v) for v in values]
        if dtype in (torch.int64, torch.int32):
            array = np.array(parsed, dtype=np.int64)
            info = np.iinfo(np.int32 if dtype == torch.int32 else np.int64)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise OverflowError
            return torch.from_numpy(array).to(dtype), None
        return torch.tensor(parsed, dtype=dtype), None
    except (ValueError, OverflowError):
        pass
    for k, value in enumerate(values):  # find the first bad value to name it
        try:
            number = parse(value)
            if dtype in (torch.int64, torch.int32):
                info = np.iinfo(np.int32 if dtype == torch.int32 else np.int64)
                if not info.min <= number <= info.max:
                    raise OverflowError
        except (ValueError, OverflowError):
            raise ValueError(
                f"{where(k)}: column {name!r}: {value!r} is not {_describe_dtype(dtype)}"
                + _missing_hint(value, dtype)
            ) from None
    raise AssertionError("unreachable: a value failed to parse, then parsed")


def _parse_float(value: str) -> float:
    return float(value) if value else float("nan")


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ValueError(value)


def _describe_dtype(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "a bool (true/false/1/0)"
    if dtype.is_floating_point:
        return f"a number ({str(dtype).removeprefix('torch.')})"
    return f"an integer in the {str(dtype).removeprefix('torch.')} range"


def _missing_hint(value: object, dtype: torch.dtype) -> str:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan")):
        return (
            "; missing values are allowed only in float columns (as NaN): fill them, or "
            "read the column as float32."
        )
    return "; fix the value or choose another dtype in columns=."


class _Source(Protocol):
    """A node table's columns, with the location of every row for error messages."""

    path: Path
    names: list[str]

    def where(self, row: int, name: str) -> str: ...

    def ids(self, name: str) -> np.ndarray: ...

    def column(self, name: str, dtype: torch.dtype | str | None) -> tuple[Tensor, list | None]:
        """The column as a tensor in row order, and its labels if it is a category column."""
        ...


class _CsvSource:
    def __init__(self, path: Path, delimiter: str | None) -> None:
        self.path = path
        text = _decode(_read_bytes(path, "node table"), path)
        lines = text.splitlines(keepends=True)  # quoted fields may hold line breaks
        data = [(k, line) for k, line in enumerate(lines, 1) if line.strip() and line[0] != "#"]
        if not data:
            raise ValueError(
                f"{path}: the node table is empty; expected a header line such as 'id,age'."
            )
        header = data[0][1]
        if delimiter is None:
            delimiter = "," if "," in header else "\t" if "\t" in header else None
        self.lines = [k for k, _ in data]
        flat = delimiter is not None and '"' not in text
        sep = str(delimiter)
        if flat:  # nothing quoted: split all fields at once, no list per row (fast, light on GC)
            body = [line.rstrip("\r\n") for _, line in data]
            widths = [line.count(sep) + 1 for line in body]
            header_fields = body[0].split(sep)
        else:
            rows = (
                [line.split() for _, line in data]
                if delimiter is None
                else list(csv.reader([line for _, line in data], delimiter=delimiter))
            )
            if len(rows) != len(data):  # a quoted field spans lines: name each row's first line
                reader = csv.reader([line for _, line in data], delimiter=delimiter or ",")
                self.lines, consumed = [], 0
                for _ in reader:
                    self.lines.append(data[consumed][0])
                    consumed = reader.line_num
            widths = [len(row) for row in rows]
            header_fields = rows[0]
        self.names = [name.strip() for name in header_fields]
        repeated = sorted({name for name in self.names if self.names.count(name) > 1})
        if repeated:
            raise ValueError(f"{path}:{self.lines[0]}: the header repeats the columns {repeated}.")
        width = len(self.names)
        bad = next((k for k, w in enumerate(widths) if w != width), None)
        if bad is not None:
            lineno = self.lines[bad]
            raise ValueError(
                f"{path}:{lineno}: expected {width} fields like the header {self.names}, got "
                f"{widths[bad]} in {lines[lineno - 1].rstrip()!r}; "
                + (
                    "the line is cut short (a truncated file or a missing delimiter)."
                    if widths[bad] < width
                    else "quote values that contain the delimiter, or pass delimiter=."
                )
                + _truncation_hint(text, lines, lineno)
            )
        if flat:
            fields = sep.join(body[1:]).split(sep) if len(body) > 1 else []
            self.columns = [fields[c::width] for c in range(width)]  # [row k, column c]
        else:
            self.columns = [list(column) for column in zip(*rows[1:])] or [[]] * width
        self.lines = self.lines[1:]
        self.truncated = _truncation_hint(text, lines, len(lines))  # "" unless cut short

    def _parse(self, parse: Callable[[], Any]) -> Any:
        """Run ``parse``; an error on a last line without newline says the file may be cut."""
        try:
            return parse()
        except ValueError as err:
            if self.truncated and str(err).startswith(f"{self.path}:{self.lines[-1]}:"):
                raise ValueError(f"{err}{self.truncated}") from None
            raise

    def where(self, row: int, name: str) -> str:
        return f"{self.path}:{self.lines[row]}:{self.names.index(name) + 1}"

    def _values(self, name: str) -> list[str]:
        return [value.strip() for value in self.columns[self.names.index(name)]]

    def ids(self, name: str) -> np.ndarray:
        return self._parse(lambda: self._ids(name))

    def _ids(self, name: str) -> np.ndarray:
        values = self._values(name)
        try:
            return np.array([int(v) for v in values], dtype=np.int64)
        except (ValueError, OverflowError):
            pass
        for k, value in enumerate(values):
            try:
                np.int64(int(value))
            except (ValueError, OverflowError):
                raise ValueError(
                    f"{self.where(k, name)}: id {value!r} in column {name!r} is not an integer; "
                    "node ids are integers 0..n-1 (relabel the nodes)."
                ) from None
        raise AssertionError("unreachable")

    def column(self, name: str, dtype: torch.dtype | str | None) -> tuple[Tensor, list | None]:
        where = lambda k: self.where(k, name)  # noqa: E731
        return self._parse(lambda: _parse_text(self._values(name), dtype, where, name))


class _ParquetSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.table = _read_parquet(path)
        self.names = list(self.table.column_names)

    def where(self, row: int, name: str) -> str:
        return f"{self.path}: row {row}, column {name!r}"

    def ids(self, name: str) -> np.ndarray:
        col = self.table.column(name)
        if not _is_int_type(col.type):
            raise ValueError(
                f"{self.path}: id column {name!r} holds {col.type}, not integer node ids; "
                "relabel the nodes to 0..n-1 or pass id_column=."
            )
        return _arrow_ints(col, name, self.path)

    def column(self, name: str, dtype: torch.dtype | str | None) -> tuple[Tensor, list | None]:
        import pyarrow as pa

        col = self.table.column(name)
        kind = col.type
        where = lambda k: self.where(k, name)  # noqa: E731
        if pa.types.is_dictionary(kind):
            col, kind = col.cast(kind.value_type), kind.value_type
        textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if dtype is None:
            if textual:
                dtype = "category"
            elif pa.types.is_boolean(kind):
                dtype = torch.bool
            elif _is_int_type(kind):
                dtype = torch.int64
            elif pa.types.is_floating(kind):
                dtype = torch.get_default_dtype()
            else:
                raise ValueError(
                    f"{self.path}: column {name!r} holds {kind}; pass columns={{{name!r}: "
                    "dtype}} to read it, or leave it out."
                )
        if textual or dtype == "category":
            values = col.to_pylist()
            if dtype != "category" or col.null_count:
                texts = ["" if v is None else str(v) for v in values]
                return _parse_text(texts, dtype, where, name)
            labels, codes = np.unique(np.asarray(values), return_inverse=True)
            return torch.from_numpy(codes.astype(np.int64).reshape(-1)), labels.tolist()
        if not (pa.types.is_boolean(kind) or _is_numeric_type(kind)):
            raise ValueError(
                f"{self.path}: column {name!r} holds {kind}, which cannot be read as {dtype}."
            )
        assert isinstance(dtype, torch.dtype)
        if dtype.is_floating_point:
            array = col.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
            return torch.tensor(array, dtype=dtype), None  # a copy: arrow memory is read-only
        _no_nulls(col, name, self.path, _missing_hint(None, dtype))
        array = col.to_numpy(zero_copy_only=False)
        bad = np.zeros(array.shape, dtype=bool)
        if array.dtype.kind == "f":  # an integer (or bool) target takes whole numbers only
            bad |= ~np.isfinite(array) | (array != np.trunc(array))
        if dtype == torch.bool and array.dtype != np.bool_:
            bad |= (array != 0) & (array != 1)
        elif dtype != torch.bool:
            info = np.iinfo(np.int32 if dtype == torch.int32 else np.int64)
            bad |= (array < info.min) | (array > info.max)
        if bool(bad.any()):
            k = int(bad.argmax())
            raise ValueError(
                f"{where(k)}: {array[k].item()!r} is not {_describe_dtype(dtype)}; fix the value "
                "or choose another dtype in columns=."
            )
        return torch.from_numpy(array.astype(_NUMPY[dtype])), None


# ---------------------------------------------------------------------------- files


def _path(path: object, name: str) -> Path:
    if not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
        raise ValueError(f"{name} must be a file path (str or pathlib.Path), got {path!r}.")
    return Path(path)  # type: ignore[arg-type]


def _check_delimiter(delimiter: object) -> str | None:
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ValueError(
            f"delimiter must be one character (',', '\\t', ';', ...) or None (guessed from "
            f"the file), got {delimiter!r}."
        )
    return delimiter  # type: ignore[return-value]


def _file_format(path: Path, format: str | None) -> str:
    """The one place a file format is resolved (``format=`` or the suffix)."""
    if format is None:
        return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    if format not in ("csv", "parquet"):
        raise ValueError(f"format={format!r} is not a file format; choose 'csv' or 'parquet'.")
    return format


_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark, e.g. from Excel's "CSV UTF-8"


def _read_bytes(path: Path, what: str) -> bytes:
    """A text file's bytes (a ``.gz`` decompressed), without a leading UTF-8 byte-order mark,
    which would otherwise turn a first line of numbers into a header, or ``id`` into
    ``\ufeffid``."""
    if not path.exists():
        raise ValueError(f"{what} {str(path)!r} does not exist; check the path.")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as err:  # a damaged or truncated .gz
        raise ValueError(f"{path}: cannot be read ({err}); is the file complete?") from err
    return data[len(_BOM) :] if data.startswith(_BOM) else data


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); save the file "
            "as UTF-8 (or plain ASCII)."
        ) from err


def _require_pyarrow(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            f"reading the Parquet file {str(path)!r} needs pyarrow; install it with "
            '`pip install "lpm-graph[parquet]"` (or pip install pyarrow).'
        ) from err
    return pq


def _read_parquet(path: Path) -> pa.Table:
    pq = _require_pyarrow(path)
    if not path.exists():
        raise ValueError(f"Parquet file {str(path)!r} does not exist; check the path.")
    try:
        return pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path}: not a readable Parquet file ({err}).") from err


def _parquet_column(table: pa.Table, name: str, path: Path) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ValueError(f"{path}: no column {name!r}; the columns are {_describe_columns(table)}.")
    return table.column(name)


def _describe_columns(table: pa.Table) -> str:
    return "[" + ", ".join(f"{f.name}: {f.type}" for f in table.schema) + "]"


def _is_int_type(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind))


def _is_numeric_type(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _no_nulls(col: pa.ChunkedArray, name: str, path: Path, hint: str = ".") -> None:
    if col.null_count:
        k = int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(f"{path}: row {k}, column {name!r}: missing value (null){hint}")


def _arrow_ints(col: pa.ChunkedArray, name: str, path: Path) -> np.ndarray:
    """An integer column as int64, refusing nulls and uint64 values beyond int64."""
    _no_nulls(col, name, path, "; every row needs a node id.")
    array = col.to_numpy()
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        k = int(np.argmax(array > np.iinfo(np.int64).max))
        raise ValueError(f"{path}: row {k}, column {name!r}: id {array[k]} is beyond int64.")
    return array.astype(np.int64)
