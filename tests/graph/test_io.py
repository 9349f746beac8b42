"""File readers: edge lists (text, Parquet), node tables, from_files; errors name file and line."""

from __future__ import annotations

import gzip
import math
import re
import sys

import numpy as np
import pytest
import torch

import lpm_graph.graph.io as gio
from lpm_graph import PopulationGraph
from lpm_graph.graph import (
    NodeTable,
    attach_node_table,
    from_files,
    read_edge_list,
    read_node_table,
)


def at(path, line, column=None):
    """The start of an error message: ``path:line:`` or ``path:line:column:``."""
    return re.escape(f"{path}:{line}:" + ("" if column is None else f"{column}:"))


@pytest.fixture
def bulk_calls(monkeypatch):
    """Record whether numpy's bulk parser read each file (True) or declined (False)."""
    calls = []
    original = gio._bulk_edges

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(gio, "_bulk_edges", spy)
    return calls


def read_by_scanner(path, monkeypatch, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(gio, "_bulk_edges", lambda *a, **k: None)
        return read_edge_list(path, **kwargs)


# ---------------------------------------------------------------------------- edge lists: text


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        ("0,1\n1,2\n3,0\n", {}),
        ("src,dst\n0,1\n1,2\n3,0", {}),  # no final newline
        ("# SNAP-style\n# Nodes: 4\nFromNodeId\tToNodeId\n0\t1\n1\t2\n3\t0\n", {}),
        ("0 1\n1   2\n\n  3 0  \n", {}),
        ("0,1\r\n1,2\r\n\r\n3,0\r\n", {}),
        ("0, 1, 0.5\n1 ,2,1e-3\n+3,0,7\n", {"weighted": True}),
        ("0,1,9,x\n1,2,9,y\n", {}),  # extra columns ignored unless weighted
        ("0;1\n1;2\n", {"delimiter": ";"}),
        ("0,1\n# a comment in the middle\n1,2\n#\n", {}),
        ("5,1\n6,2\n", {"skip_header": True}),  # first data line skipped on request
    ],
    ids=[
        "comma",
        "header",
        "snap",
        "whitespace",
        "crlf",
        "weighted",
        "extra",
        "semicolon",
        "mid-comment",
        "skip",
    ],
)
def test_bulk_parser_reads_like_the_line_scanner(tmp_path, monkeypatch, bulk_calls, text, kwargs):
    path = tmp_path / "edges.txt"
    path.write_bytes(text.encode())
    fast = read_edge_list(path, **kwargs)
    assert bulk_calls == [True]  # these files take the bulk path
    slow = read_by_scanner(path, monkeypatch, **kwargs)
    assert torch.equal(fast.edge_index(), slow.edge_index())
    assert fast.num_nodes() == slow.num_nodes()
    if kwargs.get("weighted"):
        assert torch.equal(fast.edge_weight(), slow.edge_weight())
        assert fast.edge_weight().dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    "text",
    [
        "0,1\n   \n1,2\n",  # blank line of spaces in a comma file
        "0,1\n1,2\x0b3\n",  # a line break only str.splitlines() knows
        "0,1\n1,2 # note\n",  # a trailing comment is not a comment: the scanner rejects it
        "0,1\n\u00a01,2\n",  # non-ASCII
    ],
    ids=["blank-spaces", "vt", "trailing-note", "non-ascii"],
)
def test_unusual_files_are_left_to_the_scanner(tmp_path, monkeypatch, bulk_calls, text):
    path = tmp_path / "edges.csv"
    path.write_text(text)
    try:
        expected = read_by_scanner(path, monkeypatch).edge_index()
    except ValueError as err:
        with pytest.raises(ValueError, match=re.escape(str(err))):
            read_edge_list(path)
    else:
        assert torch.equal(read_edge_list(path).edge_index(), expected)
    assert True not in bulk_calls  # declined (or never tried): the scanner read the file


def test_large_edge_list_takes_the_bulk_path(tmp_path, bulk_calls):
    n = 1_000_000
    gen = np.random.default_rng(0)
    ei = gen.integers(0, 200_000, (2, n))
    path = tmp_path / "big.csv"
    path.write_text("src,dst\n" + "\n".join(map("{},{}".format, ei[0], ei[1])) + "\n")
    graph = read_edge_list(path, num_nodes=200_000)
    assert bulk_calls == [True]
    assert torch.equal(graph.edge_index(), torch.from_numpy(ei))


def test_gz_edge_list_takes_the_bulk_path(tmp_path, bulk_calls):
    path = tmp_path / "edges.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("# comment\n0\t1\t0.5\n2\t0\t1.5\n")
    graph = read_edge_list(path, weighted=True)
    assert bulk_calls == [True]
    assert graph.edge_index().tolist() == [[0, 2], [1, 0]]
    assert graph.edge_weight().tolist() == [0.5, 1.5]


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        ("0,1\n1,2\n12,", 3, r"node ids must be integers .*got '12,'"),
        ("0,1\n1,2\n12", 3, r"expected 2 columns \(src, dst\), got '12'"),
        ("src,dst\n0,1\n1", 3, r"expected 2 columns"),
    ],
    ids=["cut-after-delimiter", "cut-after-id", "cut-after-header"],
)
def test_truncated_edge_list_names_file_and_line(tmp_path, text, lineno, message):
    path = tmp_path / "cut.csv"
    path.write_text(text)
    with pytest.raises(
        ValueError, match=at(path, lineno) + " " + message + r".*the file does not end with a "
        r"newline: is it truncated\?"
    ):  # fmt: skip
        read_edge_list(path)


def test_bad_line_in_the_middle_of_a_large_file(tmp_path):
    lines = [f"{k},{k + 1}" for k in range(50_000)]
    lines[31_415] = "31415,31416.5"
    path = tmp_path / "edges.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=at(path, 31_416) + r" node ids must be integers"):
        read_edge_list(path)


def test_edge_id_out_of_range_names_the_line(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("# people\nsrc,dst\n0,1\n\n1,7\n")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}: edge_index has destination id 7 at edge 1, outside [0, 4) ")
        + re.escape("(line 5: '1,7'); node ids must be 0..3"),
    ):
        read_edge_list(path, num_nodes=4)
    path.write_text("0,1\n-2,1\n")
    with pytest.raises(ValueError, match=r"source id -2 at edge 1, outside \[0, 2\) \(line 2"):
        read_edge_list(path)


def test_read_edge_list_marks_undirected_relations(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("0,1\n1,2\n")
    assert read_edge_list(path, undirected=True)["agent", "contact", "agent"].undirected is True
    assert "undirected" not in read_edge_list(path)["agent", "contact", "agent"]


def test_text_only_and_parquet_only_options(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("0,1\n")
    with pytest.raises(ValueError, match=r"columns= and weight_column= are for Parquet"):
        read_edge_list(path, columns=("a", "b"))
    with pytest.raises(ValueError, match=r"format='xlsx' is not a file format; choose 'csv'"):
        read_edge_list(path, format="xlsx")


# ---------------------------------------------------------------------------- edge lists: parquet


def write_parquet(path, columns):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_edge_list_equals_csv(tmp_path):
    pytest.importorskip("pyarrow")
    gen = np.random.default_rng(3)
    src, dst = gen.integers(0, 50, 200), gen.integers(0, 50, 200)
    w = gen.uniform(0.1, 3.0, 200).round(3)
    csv_path = tmp_path / "edges.csv"
    csv_path.write_text("".join(f"{a},{b},{c}\n" for a, b, c in zip(src, dst, w)))
    parquet = write_parquet(tmp_path / "edges.parquet", {"src": src, "dst": dst, "w": w})
    for kwargs in ({}, {"weighted": True, "undirected": True}):
        from_csv = read_edge_list(csv_path, num_nodes=50, **kwargs)
        from_parquet = read_edge_list(parquet, num_nodes=50, **kwargs)
        assert torch.equal(from_csv.edge_index(), from_parquet.edge_index())
        if kwargs:
            assert torch.equal(from_csv.edge_weight(), from_parquet.edge_weight())
        else:
            assert from_parquet.edge_weight() is None


def test_parquet_edge_list_columns(tmp_path):
    pytest.importorskip("pyarrow")
    path = write_parquet(
        tmp_path / "contacts.pq",
        {
            "kind": ["home", "work", "home"],
            "a": np.array([0, 1, 2], dtype=np.int32),
            "b": np.array([1, 2, 0], dtype=np.uint16),
            "hours": [1.5, 8.0, 2.0],
            "days": [7, 5, 7],
        },
    )
    graph = read_edge_list(path, format="parquet")  # first two integer columns: a, b
    assert graph.edge_index().tolist() == [[0, 1, 2], [1, 2, 0]]
    graph = read_edge_list(path, format="parquet", columns=("b", "a"), weight_column="days")
    assert graph.edge_index().tolist() == [[1, 2, 0], [0, 1, 2]]
    assert graph.edge_weight().tolist() == [7.0, 5.0, 7.0]
    assert read_edge_list(path, weighted=True).edge_weight().tolist() == [1.5, 8.0, 2.0]


def test_parquet_edge_list_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    path = write_parquet(
        tmp_path / "e.parquet", {"src": [0, 1], "dst": ["1", "0"], "n": pa.array([1, None])}
    )
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}: id column 'dst' holds string, not integer node ids")
        + r".*\[src: int64, dst: string, n: int64\]",
    ):
        read_edge_list(path, columns=("src", "dst"))
    with pytest.raises(ValueError, match=re.escape(f"{path}: no column 'to'; the columns are")):
        read_edge_list(path, columns=("src", "to"))
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: row 1, column 'n': missing value (null)")
    ):
        read_edge_list(path, columns=("src", "n"))
    with pytest.raises(ValueError, match=r"weight column 'dst' holds string, not numbers"):
        read_edge_list(path, columns=("src", "src"), weight_column="dst")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match=re.escape(f"{cut}: not a readable Parquet file")):
        read_edge_list(cut)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "edges.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match=r'pip install "lpm-graph\[parquet\]"'):
        read_edge_list(path)
    with pytest.raises(ImportError, match=r"needs pyarrow"):
        read_node_table(path)


# ---------------------------------------------------------------------------- node tables


def test_read_node_table_orders_rows_by_id_and_types_columns(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(
        "# synthetic people\n"
        "id,age,income,vaccinated,region,weight\n"
        "2,40,1.5,true,south,\n"
        "0,7,0.25,False,north,3\n"
        '1,71,2,TRUE,"east, coast",0.5\n'
    )
    table = read_node_table(path)
    assert isinstance(table, NodeTable) and table.num_nodes == 3
    assert list(table) == ["age", "income", "vaccinated", "region", "weight"]
    assert table["age"].dtype == torch.int64 and table["age"].tolist() == [7, 71, 40]
    assert table["income"].dtype == torch.float32 and table["income"].tolist() == [0.25, 2, 1.5]
    assert table["vaccinated"].tolist() == [False, True, True]
    assert table.categories == {"region": ["east, coast", "north", "south"]}
    assert table["region"].tolist() == [1, 0, 2]  # codes into the sorted labels
    assert table["weight"].tolist()[:2] == [3.0, 0.5] and math.isnan(table["weight"][2])

    table = read_node_table(
        path, columns={"age": "float64", "income": torch.float64, "region": str}
    )
    assert list(table) == ["age", "income", "region"]
    assert table["age"].dtype == torch.float64 and table["income"].dtype == torch.float64
    assert table.categories["region"] == ["east, coast", "north", "south"]


def test_read_node_table_whitespace_and_tab(tmp_path):
    tsv = tmp_path / "people.tsv"
    tsv.write_text("id\tage\n1\t30\n0\t20\n")
    assert read_node_table(tsv)["age"].tolist() == [20, 30]
    txt = tmp_path / "people.txt"
    txt.write_text("id  age\n1 30\n 0   20\n")
    assert read_node_table(txt, columns={"age": "int32"})["age"].dtype == torch.int32


def test_node_table_quoted_fields_keep_line_numbers(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text('id,name,age\n0,"two\nlines",3\n1,"b, c",4\n2,d,x\n')
    with pytest.raises(ValueError, match=at(path, 5, 3) + r" column 'age': 'x' is not an int"):
        read_node_table(path, columns={"age": "int64"})
    table = read_node_table(path, columns={"name": str})
    assert table.categories["name"] == ["b, c", "d", "two\nlines"]
    assert table["name"].tolist() == [2, 0, 1]


NODE_TABLE_ERRORS = [
    # (text, kwargs, expected message regex given the path)
    (
        "id,age\n0,3\n1,4\n2,",
        {"columns": {"age": "int64"}},
        lambda p: (
            at(p, 4, 2) + r" column 'age': '' is not an integer in the int64 range; "
            r"missing values are allowed only in float columns.* is it truncated\?"
        ),
    ),
    (
        "id,age,sex\n0,3,f\n1,4",
        {},
        lambda p: (
            at(p, 3) + r" expected 3 fields like the header \['id', 'age', 'sex'\], got 2 "
            r"in '1,4'; the line is cut short .* is it truncated\?"
        ),
    ),
    (
        "id,age,sex\n0,3\n1,4,m\n",
        {},
        lambda p: at(p, 2) + r" expected 3 fields .*, got 2 in '0,3'; the line is cut short",
    ),
    (
        "id,age\n0,3,1\n",
        {},
        lambda p: at(p, 2) + r" expected 2 fields .* quote values that contain the delimiter",
    ),
    (
        "id,age\n0,3\nx1,4\n",
        {},
        lambda p: at(p, 3, 1) + r" id 'x1' in column 'id' is not an integer; node ids are",
    ),
    (
        "id,age\n0,3\n1.0,4\n",
        {},
        lambda p: at(p, 3, 1) + r" id '1\.0' in column 'id' is not an integer",
    ),
    (
        "id,age\n0,3\n5,4\n",
        {"num_nodes": 3},
        lambda p: at(p, 3, 1) + r" id 5 is outside \[0, 3\) \(num_nodes=3\)",
    ),
    ("id,age\n0,3\n-1,4\n", {}, lambda p: at(p, 3, 1) + r" id -1 is negative"),
    (
        "id,age\n0,3\n1,4\n0,5\n",
        {},
        lambda p: at(p, 4, 1) + r" id 0 appears again \(first at " + at(p, 2, 1)[:-1] + r"\)",
    ),
    (
        "id,age\n0,3\n3,4\n",
        {},
        lambda p: re.escape(f"{p}: 2 of the 4 node ids are missing (the first is 1)"),
    ),
    (
        "id,age\n0,3\n1,4\n",
        {"num_nodes": 5},
        lambda p: (
            re.escape(f"{p}: 3 of the 5 node ids are missing (the first is 2)")
            + r".*\(num_nodes=5\)"
        ),
    ),
    (
        "id,age\n0,3\n1,4\n",
        {"columns": {"height": "float32"}},
        lambda p: re.escape(f"{p}: no column 'height'; the columns are ['id', 'age']"),
    ),
    (
        "person,age\n0,3\n",
        {},
        lambda p: (
            re.escape(f"{p}: no id column 'id'; the columns are ['person', 'age']. Pass")
            + r" id_column="
        ),
    ),
    (
        "id,age\n0,3\n1,old\n",
        {"columns": {"age": "float32"}},
        lambda p: (
            at(p, 3, 2) + r" column 'age': 'old' is not a number \(float32\); fix the "
            r"value or choose another dtype"
        ),
    ),
    (
        "id,age\n0,nan\n1,4\n",
        {"columns": {"age": "int64"}},
        lambda p: (
            at(p, 2, 2) + r" column 'age': 'nan' is not an integer .*missing values are "
            r"allowed only in float columns"
        ),
    ),
    (
        "id,age\n0,3\n1,3000000000\n",
        {"columns": {"age": "int32"}},
        lambda p: at(p, 3, 2) + r" column 'age': '3000000000' is not an integer in the int32",
    ),
    (
        "id,sick\n0,yes\n",
        {"columns": {"sick": "bool"}},
        lambda p: at(p, 2, 2) + r" column 'sick': 'yes' is not a bool \(true/false/1/0\)",
    ),
    (
        "id,region\n0,north\n1,\n",
        {"columns": {"region": "category"}},
        lambda p: at(p, 3, 2) + r" column 'region' has an empty value; a category column needs",
    ),
    (
        "id,age\n0,3\n",
        {"columns": {"age": "int8"}},
        lambda p: r"columns\['age'\]='int8' is not a supported dtype; choose one of 'int64'",
    ),
    (
        "id,id\n0,3\n",
        {},
        lambda p: at(p, 1) + r" the header repeats the columns \['id'\]",
    ),
    ("# only a comment\n", {}, lambda p: re.escape(f"{p}: the node table is empty")),
]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    NODE_TABLE_ERRORS,
    ids=[
        "empty-int-last-line",
        "truncated-last-line",
        "short-line",
        "long-line",
        "non-integer-id",
        "float-id",
        "id-out-of-range",
        "negative-id",
        "duplicate-id",
        "missing-ids",
        "missing-ids-num-nodes",
        "missing-column",
        "missing-id-column",
        "bad-float",
        "nan-int",
        "int32-overflow",
        "bad-bool",
        "empty-category",
        "unknown-dtype",
        "repeated-header",
        "empty",
    ],
)
def test_node_table_errors_name_file_line_and_column(tmp_path, text, kwargs, message):
    path = tmp_path / "nodes.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message(path)):
        read_node_table(path, **kwargs)


def test_parquet_node_table_equals_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("id,age,income,sick,region\n1,30,1.5,true,b\n0,20,,false,a\n2,9,3,1,b\n")
    parquet = write_parquet(
        tmp_path / "people.parquet",
        {
            "id": [1, 0, 2],
            "age": [30, 20, 9],
            "income": pa.array([1.5, None, 3.0]),
            "sick": [True, False, True],
            "region": pa.array(["b", "a", "b"]).dictionary_encode(),
        },
    )
    for columns in (None, {"age": "float64", "income": "float64", "sick": "bool", "region": str}):
        from_csv = read_node_table(csv_path, columns=columns)
        from_parquet = read_node_table(parquet, columns=columns)
        assert list(from_csv) == list(from_parquet)
        for name in from_csv:
            assert from_csv[name].dtype == from_parquet[name].dtype, name
            torch.testing.assert_close(from_csv[name], from_parquet[name], equal_nan=True)
        assert from_csv.categories == from_parquet.categories == {"region": ["a", "b"]}


def test_parquet_node_table_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    path = write_parquet(
        tmp_path / "people.parquet",
        {"id": [0, 1, 1], "age": pa.array([3, None, 4]), "h": [1.5, 2.0, 2.5]},
    )
    with pytest.raises(ValueError, match=re.escape(f"{path}: row 2, column 'id': id 1 appears")):
        read_node_table(path, columns={"h": "float32"})
    path = write_parquet(
        tmp_path / "people.parquet",
        {"id": [0, 1, 2], "age": pa.array([3, None, 4]), "h": [1.5, 2.0, 2.5], "s": ["a"] * 3},
    )
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: row 1, column 'age': missing value (null)")
    ):
        read_node_table(path, columns={"age": "int64"})
    assert math.isnan(read_node_table(path, columns={"age": "float32"})["age"][1])
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: row 0, column 'h': 1.5 is not an integer")
    ):
        read_node_table(path, columns={"h": "int64"})
    with pytest.raises(ValueError, match=re.escape(f"{path}: id column 's' holds string")):
        read_node_table(path, id_column="s", columns={"h": "int64"})


# ---------------------------------------------------------------------------- nothing half-loaded


def snapshot(graph):
    return {
        key: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in graph[key].items()}
        for key in graph.node_types + graph.relations
    }


def assert_unchanged(graph, before):
    after = snapshot(graph)
    assert after.keys() == before.keys()
    for key, store in before.items():
        assert after[key].keys() == store.keys(), key
        for name, value in store.items():
            if torch.is_tensor(value):
                assert torch.equal(after[key][name], value), (key, name)
            else:
                assert after[key][name] == value, (key, name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,age,risk\n0,3,0.5\n1,4,high\n2,5,0.1\n", r":3:3: column 'risk': 'high' is not a"),
        ("id,age,risk\n0,3,0.5\n1,4,0.2\n", r"1 of the 3 node ids are missing"),
        ("id,age,risk\n0,3,0.5\n1,4,0.2\n2,5", r"expected 3 fields"),
        ("id,age,num_nodes\n0,3,1\n1,4,1\n2,5,1\n", r"'num_nodes' cannot be a node attr"),
    ],
    ids=["bad-value-in-a-later-column", "missing-id", "truncated", "reserved-name"],
)
def test_attach_node_table_leaves_the_graph_unchanged_on_error(tmp_path, text, message):
    graph = PopulationGraph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 3, undirected=True)
    graph.set_node_attrs(height=torch.tensor([1.0, 2.0, 3.0]))
    before = snapshot(graph)
    path = tmp_path / "nodes.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        columns = {"age": "int64", "risk": "float32"} if "risk" in text else None
        attach_node_table(graph, path, columns=columns)
    assert_unchanged(graph, before)


def test_attach_node_table_refuses_to_overwrite(tmp_path):
    graph = PopulationGraph.from_edge_index(torch.tensor([[0], [1]]), 2)
    graph.set_node_attrs(height=torch.tensor([1.0, 2.0]))
    before = snapshot(graph)
    path = tmp_path / "nodes.csv"
    path.write_text("id,age,height\n0,3,1.5\n1,4,1.6\n")
    with pytest.raises(ValueError, match=r"'agent' nodes would get \['height'\] twice"):
        attach_node_table(graph, path)
    assert_unchanged(graph, before)
    attach_node_table(graph, path, columns={"age": "int64"})
    assert graph["agent"].age.tolist() == [3, 4]


def test_attach_node_table_attaches_columns_and_category_labels(tmp_path):
    graph = PopulationGraph.from_edge_index(torch.tensor([[0], [1]]), 2)
    path = tmp_path / "nodes.csv"
    path.write_text("id,age,school\n1,40,none\n0,7,elm\n")
    attach_node_table(graph, path)
    assert graph["agent"].age.tolist() == [7, 40]
    assert graph["agent"].school.tolist() == [0, 1]
    assert graph["agent"].school_categories == ["elm", "none"]


# ---------------------------------------------------------------------------- from_files


def test_from_files_builds_the_graph_with_node_attributes(tmp_path):
    edges = tmp_path / "edges.csv"
    edges.write_text("src,dst,w\n0,1,0.5\n1,3,2\n")
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("id,age,region\n0,30,n\n1,40,s\n2,50,n\n3,60,s\n4,70,n\n")
    graph = PopulationGraph.from_files(edges, nodes, undirected=True, weighted=True)
    assert graph.num_nodes() == 5  # the node table's size, not max edge id + 1
    assert graph.edge_index().tolist() == [[0, 1, 1, 3], [1, 3, 0, 1]]
    assert graph.edge_weight().tolist() == [0.5, 2.0, 0.5, 2.0]
    assert graph["agent", "contact", "agent"].undirected is True
    assert graph["agent"].age.tolist() == [30, 40, 50, 60, 70]
    assert graph["agent"].region_categories == ["n", "s"]
    # without a node table: max edge id + 1, or num_nodes
    assert from_files(edges).num_nodes() == 4
    assert from_files(edges, num_nodes=9).num_nodes() == 9
    only_age = from_files(edges, nodes, node_columns={"age": "float32"})
    assert set(only_age.node_attrs()) == {"age"}


def test_from_files_edge_outside_the_node_table_names_the_edge_file_and_line(tmp_path):
    edges = tmp_path / "edges.csv"
    edges.write_text("0,1\n# later\n1,5\n")
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("id,age\n0,1\n1,2\n2,3\n")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{edges}: edge_index has destination id 5 at edge 1, outside [0, 3) ")
        + re.escape("(line 3: '1,5'); node ids must be 0..2, the ids of the node table")
        + re.escape(f" {str(nodes)!r}"),
    ):
        from_files(edges, nodes)
    with pytest.raises(ValueError, match=re.escape(f"{nodes}: 2 of the 5 node ids are missing")):
        from_files(edges, nodes, num_nodes=5)


def test_from_files_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    edges = write_parquet(tmp_path / "e.parquet", {"a": [0, 2], "b": [1, 0]})
    nodes = write_parquet(tmp_path / "n.parquet", {"id": [2, 1, 0], "age": [3.5, 2.5, 1.5]})
    graph = from_files(edges, nodes)
    assert graph.edge_index().tolist() == [[0, 2], [1, 0]]
    assert graph["agent"].age.tolist() == [1.5, 2.5, 3.5]
    bad = write_parquet(tmp_path / "bad.parquet", {"a": [0, 7], "b": [1, 0]})
    with pytest.raises(ValueError, match=r"source id 7 at edge 1, outside \[0, 3\) \(row 1\)"):
        from_files(bad, nodes)
