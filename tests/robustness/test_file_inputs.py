"""Bad files and bad arguments to the file readers (edge lists, node tables): a ValueError
naming the file (and the line where there is one) or the argument, before anything is built.
An empty file and a header-only file behave alike. Table-driven: each case is a file's
bytes, the call, the error class and a phrase of its message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lpm_graph import PopulationGraph
from lpm_graph.graph import attach_node_table, from_files, read_edge_list, read_node_table

N = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


def _file(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _graph() -> PopulationGraph:
    return PopulationGraph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), N)


EDGE_CASES = [
    # (id, file name, content, keyword arguments, error class, phrase)
    ("an empty file", "empty.csv", "", {}, ValueError, "has no edges; expected 'src,dst' lines"),
    (
        "a header-only file",
        "header.csv",
        "src,dst\n",
        {},
        ValueError,
        "has no edges; expected 'src,dst' lines",
    ),
    ("comments only", "comments.csv", "# nothing here\n\n", {}, ValueError, "has no edges"),
    ("one column", "one.csv", "0\n1\n", {}, ValueError, "one.csv:1: expected 2 columns"),
    (
        "a text id",
        "text.csv",
        "0,1\n1,x\n",
        {},
        ValueError,
        "text.csv:2: node ids must be integers",
    ),
    ("a fractional id", "frac.csv", "0,1\n1,2.5\n", {}, ValueError, "frac.csv:2"),
    ("a negative id", "neg.csv", "0,1\n-1,2\n", {}, ValueError, "source id -1 at edge 1"),
    (
        "an id beyond num_nodes",
        "beyond.csv",
        "0,1\n1,7\n",
        {"num_nodes": 5},
        ValueError,
        "(line 2: '1,7')",
    ),
    (
        "an id beyond int64",
        "huge.csv",
        "0,1\n1,99999999999999999999999\n",
        {},
        ValueError,
        "huge.csv:2: node id out of the int64 range",
    ),
    (
        "an absurd id",
        "absurd.csv",
        "0,1\n1,100000000000000\n",
        {},
        ValueError,
        "pass num_nodes= if the graph really has that many",
    ),
    ("a header in the middle", "middle.csv", "0,1\nsrc,dst\n1,2\n", {}, ValueError, "middle.csv:2"),
    (
        "a header read as data",
        "kept.csv",
        "src,dst\n0,1\n",
        {"skip_header": False},
        ValueError,
        "kept.csv:1",
    ),
    (
        "weighted without weights",
        "noweight.csv",
        "0,1\n1,2\n",
        {"weighted": True},
        ValueError,
        "expected 3 columns (src, dst, weight)",
    ),
    (
        "a text weight",
        "textweight.csv",
        "0,1,a\n1,2,1\n",
        {"weighted": True},
        ValueError,
        "textweight.csv:1",
    ),
    (
        "a NaN weight",
        "nanweight.csv",
        "0,1,nan\n1,2,1\n",
        {"weighted": True},
        ValueError,
        "must be finite and non-negative",
    ),
    (
        "a negative weight",
        "negweight.csv",
        "0,1,-2\n1,2,1\n",
        {"weighted": True},
        ValueError,
        "must be finite and non-negative",
    ),
    (
        "binary garbage",
        "garbage.csv",
        b"\x00\xff\xfe\x00garbage",
        {},
        ValueError,
        "garbage.csv:1: not UTF-8 text",
    ),
    (
        "a damaged gzip",
        "damaged.csv.gz",
        b"not gzip",
        {},
        ValueError,
        "damaged.csv.gz: cannot be read",
    ),
    ("Latin-1 bytes", "latin.csv", b"0,1\n1,\xe9\n", {}, ValueError, "latin.csv:2: not UTF-8 text"),
    (
        "the wrong delimiter",
        "delim.csv",
        "0,1\n1,2\n",
        {"delimiter": "\t"},
        ValueError,
        "pass the right delimiter=",
    ),
    (
        "a two-character delimiter",
        "delim2.csv",
        "0,1\n",
        {"delimiter": ",,"},
        ValueError,
        "delimiter must be one character",
    ),
    (
        "an unknown format",
        "format.csv",
        "0,1\n",
        {"format": "xml"},
        ValueError,
        "format='xml' is not a file format",
    ),
    (
        "num_nodes negative",
        "nn.csv",
        "0,1\n",
        {"num_nodes": -3},
        ValueError,
        "num_nodes must be a non-negative int, got -3",
    ),
    (
        "num_nodes a float",
        "nf.csv",
        "0,1\n",
        {"num_nodes": 3.5},
        ValueError,
        "num_nodes must be a non-negative int, got 3.5",
    ),
    (
        "Parquet columns for a text file",
        "cols.csv",
        "0,1\n",
        {"columns": ("a", "b")},
        ValueError,
        "columns= and weight_column= are for Parquet",
    ),
    ("an unknown keyword", "kw.csv", "0,1\n", {"directed": True}, TypeError, "'directed'"),
]

NODE_CASES = [
    ("an empty file", "n_empty.csv", "", {}, ValueError, "the node table is empty"),
    (
        "a header-only file",
        "n_header.csv",
        "id,age\n",
        {},
        ValueError,
        "the node table has a header but no rows",
    ),
    (
        "no id column",
        "n_noid.csv",
        "name,age\n0,1\n",
        {},
        ValueError,
        "no id column 'id'; the columns are ['name', 'age']",
    ),
    (
        "a repeated id",
        "n_dup.csv",
        "id,age\n0,1\n0,2\n",
        {},
        ValueError,
        "n_dup.csv:3:1: id 0 appears again",
    ),
    (
        "a gap in the ids",
        "n_gap.csv",
        "id,age\n0,1\n2,2\n",
        {},
        ValueError,
        "1 of the 3 node ids are missing",
    ),
    (
        "a negative id",
        "n_neg.csv",
        "id,age\n-1,1\n0,2\n",
        {},
        ValueError,
        "n_neg.csv:2:1: id -1 is negative",
    ),
    (
        "a text id",
        "n_text.csv",
        "id,age\na,1\n",
        {},
        ValueError,
        "id 'a' in column 'id' is not an integer",
    ),
    (
        "a line cut short",
        "n_short.csv",
        "id,age,sex\n0,1\n1,2,m\n",
        {},
        ValueError,
        "n_short.csv:2: expected 3 fields",
    ),
    (
        "a line too long",
        "n_long.csv",
        "id,age\n0,1,9\n1,2\n",
        {},
        ValueError,
        "n_long.csv:2: expected 2 fields",
    ),
    (
        "a repeated column",
        "n_repeat.csv",
        "id,age,age\n0,1,2\n",
        {},
        ValueError,
        "the header repeats the columns ['age']",
    ),
    (
        "an unnamed column",
        "n_unnamed.csv",
        "id,,age\n0,1,2\n",
        {},
        ValueError,
        "column 2 has no name in the header",
    ),
    (
        "a stray word in a number column",
        "n_stray.csv",
        "id,age\n0,5\n1,10\n2,unknown\n",
        {},
        ValueError,
        "n_stray.csv:4",
    ),
    (
        "an unknown dtype",
        "n_dtype.csv",
        "id,age\n0,1\n",
        {"columns": {"age": "int8"}},
        ValueError,
        "columns['age']='int8' is not a supported dtype",
    ),
    (
        "columns a list",
        "n_list.csv",
        "id,age\n0,1\n",
        {"columns": ["age"]},
        ValueError,
        "columns must map column names to dtypes",
    ),
    (
        "a dtype for a missing column",
        "n_missing.csv",
        "id,age\n0,1\n",
        {"columns": {"sex": "category"}},
        ValueError,
        "no column 'sex'",
    ),
    (
        "text in an int column",
        "n_int.csv",
        "id,age\n0,x\n",
        {"columns": {"age": "int64"}},
        ValueError,
        "n_int.csv:2:2: column 'age': 'x' is not an integer",
    ),
    (
        "2 in a bool column",
        "n_bool.csv",
        "id,flag\n0,2\n",
        {"columns": {"flag": "bool"}},
        ValueError,
        "'2' is not a bool",
    ),
    (
        "an int32 overflow",
        "n_i32.csv",
        "id,x\n0,9999999999\n",
        {"columns": {"x": "int32"}},
        ValueError,
        "not an integer in the int32 range",
    ),
    (
        "num_nodes larger than the table",
        "n_fewer.csv",
        "id,age\n0,1\n1,2\n",
        {"num_nodes": 5},
        ValueError,
        "(num_nodes=5)",
    ),
    (
        "a missing id column name",
        "n_pid.csv",
        "id,age\n0,1\n",
        {"id_column": "pid"},
        ValueError,
        "no id column 'pid'",
    ),
    (
        "a two-character delimiter",
        "n_delim.csv",
        "id,age\n0,1\n",
        {"delimiter": ";;"},
        ValueError,
        "delimiter must be one character",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "error", "phrase"),
    [c[1:] for c in EDGE_CASES],
    ids=[c[0] for c in EDGE_CASES],
)
def test_bad_edge_list_is_a_clear_error(folder, name, content, kwargs, error, phrase):
    path = _file(folder, name, content)
    with pytest.raises(error) as raised:
        read_edge_list(path, **kwargs)
    assert phrase in str(raised.value)


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "error", "phrase"),
    [c[1:] for c in NODE_CASES],
    ids=[c[0] for c in NODE_CASES],
)
def test_bad_node_table_is_a_clear_error(folder, name, content, kwargs, error, phrase):
    path = _file(folder, name, content)
    with pytest.raises(error) as raised:
        read_node_table(path, **kwargs)
    assert phrase in str(raised.value)


OTHER_CASES = [
    (
        "a path that does not exist",
        lambda f: read_edge_list(f / "nope.csv"),
        ValueError,
        "does not exist; check the path",
    ),
    ("a folder as the path", lambda f: read_edge_list(f), ValueError, "cannot be read"),
    (
        "an int as the path",
        lambda f: read_edge_list(5),
        ValueError,
        "path must be a file path (str or pathlib.Path), got 5",
    ),
    (
        "an int as the node table path",
        lambda f: read_node_table(5),
        ValueError,
        "path must be a file path",
    ),
    (
        "from_files with an int edges path",
        lambda f: from_files(5),
        ValueError,
        "edges must be a file path",
    ),
    (
        "from_files with an id beyond the node table",
        lambda f: from_files(
            _file(f, "ff_e.csv", "0,1\n1,5\n"), _file(f, "ff_n.csv", "id,age\n0,1\n1,2\n")
        ),
        ValueError,
        "add the node to the table",
    ),
    (
        "from_files with a missing node table",
        lambda f: from_files(_file(f, "ff_e2.csv", "0,1\n"), f / "none.csv"),
        ValueError,
        "none.csv' does not exist",
    ),
    (
        "attach_node_table of the wrong size",
        lambda f: attach_node_table(_graph(), _file(f, "at.csv", "id,age\n0,1\n1,2\n")),
        ValueError,
        "(num_nodes=6)",
    ),
    (
        "attach_node_table with a num_nodes column",
        lambda f: attach_node_table(
            _graph(), _file(f, "at2.csv", "id,num_nodes\n" + "".join(f"{i},1\n" for i in range(N)))
        ),
        ValueError,
        "column 'num_nodes' cannot be a node attribute",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "phrase"), [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES]
)
def test_bad_reader_argument_is_a_clear_error(folder, call, error, phrase):
    with pytest.raises(error) as raised:
        call(folder)
    assert phrase in str(raised.value)


@pytest.mark.parametrize("content", ["", "src,dst\n", "# a comment\n"])
def test_an_empty_and_a_header_only_edge_list_read_alike_with_num_nodes(folder, content):
    """Without num_nodes both are an error (above); with it, both are nodes without contacts."""
    path = _file(folder, "alike.csv", content)
    graph = read_edge_list(path, num_nodes=4)
    assert graph.num_nodes() == 4 and graph.num_edges() == 0


def test_extra_columns_are_ignored_as_documented(folder):
    path = _file(folder, "extra.csv", "0,1,0.5\n1,2,0.25\n")
    assert read_edge_list(path).edge_weight() is None
    assert read_edge_list(path, weighted=True).edge_weight().tolist() == [0.5, 0.25]
