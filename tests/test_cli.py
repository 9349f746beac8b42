"""The ``lpm-graph`` command line: run, bench, info, demo, help and bad arguments (tiny runs)."""

from __future__ import annotations

import argparse
import csv
import json
import sys

import pytest
import torch

from lpm_graph import cli
from lpm_graph.cli import build_parser, main

PNG = b"\x89PNG\r\n\x1a\n"


def _table(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def _exit(argv, capsys):
    """Run ``main(argv)`` as the console script does; the exit status, stdout and stderr."""
    try:
        status = main(argv)
    except SystemExit as done:
        status = done.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def edge_file(tmp_path):
    """A ring of 30 agents as an edge list, and a node table with age groups."""
    edges = tmp_path / "ring.csv"
    edges.write_text("src,dst\n" + "".join(f"{i},{(i + 1) % 30}\n" for i in range(30)))
    nodes = tmp_path / "people.csv"
    nodes.write_text("id,age_group\n" + "".join(f"{i},{i % 8}\n" for i in range(30)))
    return edges, nodes


def test_run_on_the_bundled_dataset_writes_table_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["run", "--steps", "3", "--output", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "70,916 agents" in out and "wrote" in out
    assert "3/3" in err  # the progress bar (tqdm, on stderr)

    rows = _table(tmp_path / "results.csv")
    assert list(rows[0]) == ["t", "S", "I", "R", "new_infections", "new_recoveries"]
    assert [float(r["t"]) for r in rows] == [0, 1, 2, 3]
    assert all(sum(float(r[c]) for c in "SIR") == 70_916 for r in rows)
    assert rows[0]["I"] == "10" and rows[0]["new_infections"] == ""
    for before, after in zip(rows, rows[1:]):  # flows of a step move the counts
        assert float(after["S"]) == float(before["S"]) - float(after["new_infections"])

    record = json.loads((tmp_path / "run.json").read_text())
    assert record["arguments"]["steps"] == 3 and record["arguments"]["dataset"] == "franklin"
    assert record["protocol"] == {
        "name": "sir",
        "class": "SIR",
        "transmission_rate": 0.1,
        "recovery_rate": 0.2,
        "order": "infect_first",
    }
    assert record["dataset"]["agents"] == 70_916 and record["dataset"]["edges"] == 499_982
    assert record["final"]["S"] == float(rows[-1]["S"])
    assert record["files"] == {"table": "results.csv", "plot": "epidemic.png"}
    assert (tmp_path / "epidemic.png").read_bytes()[:8] == PNG


def test_run_seirm_with_replicates_on_a_synthetic_population(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = [
        "run", "--protocol", "seirm", "--r0", "3", "--mortality", "0.05",
        "--dataset", "synthetic:400", "--steps", "4", "--replicates", "2",
        "--initial-infected", "20", "--no-progress", "--output", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().err == ""  # --no-progress
    rows = _table(tmp_path / "results.csv")
    assert len(rows) == 2 * 5 and {r["replicate"] for r in rows} == {"0", "1"}
    for r in rows:
        assert sum(float(r[c]) for c in "SEIRM") == 400
        for c in "SEIRM":  # the per-age columns add up to the total
            assert sum(float(r[f"{c}_by_age_{g}"]) for g in range(8)) == float(r[c])
    assert "new_infections_by_age_7" in rows[0] and "new_deaths" in rows[0]
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["protocol"]["r0"] == 3 and record["protocol"]["mortality"] == 0.05
    assert record["age_groups"][0] == "0-19" and len(record["age_groups"]) == 8
    assert (tmp_path / "epidemic.png").read_bytes()[:8] == PNG


def test_run_on_an_edge_list_file_with_a_node_table(tmp_path, edge_file, capsys):
    edges, nodes = edge_file
    out = tmp_path / "sir"
    argv = ["run", "--dataset", str(edges), "--steps", "2", "--no-progress", "--output", str(out)]
    assert main([*argv, "--initial-infected", "1"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["dataset"]["agents"] == 30 and record["dataset"]["edges"] == 60  # undirected
    assert main([*argv, "--directed", "--output", str(tmp_path / "directed")]) == 0
    directed = json.loads((tmp_path / "directed" / "run.json").read_text())
    assert directed["dataset"]["edges"] == 30

    staged = tmp_path / "staged"
    argv = [
        "run", "--protocol", "staged-seirm", "--dataset", str(edges), "--nodes", str(nodes),
        "--steps", "3", "--no-progress", "--output", str(staged),
    ]  # fmt: skip
    assert main(argv) == 0
    rows = _table(staged / "results.csv")
    assert {"severe", "icu", "new_entered_severe", "S_by_age_7"} <= set(rows[0])
    assert all(sum(float(r[c]) for c in ("S", "E", "R", "M", "mild", "severe", "icu",
                                          "asymptomatic", "presymptomatic")) == 30
               for r in rows)  # fmt: skip


def test_run_without_matplotlib_writes_the_table_and_says_why_there_is_no_plot(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = ["run", "--dataset", "synthetic:100", "--steps", "2", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path)]) == 0
    assert "pip install 'lpm-graph[plot]'" in capsys.readouterr().err
    assert (tmp_path / "results.csv").exists() and not (tmp_path / "epidemic.png").exists()
    assert json.loads((tmp_path / "run.json").read_text())["files"]["plot"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: command"),
        (["simulate"], "invalid choice: 'simulate'"),
        (["run", "--protocol", "sirs"], "argument --protocol: invalid choice: 'sirs'"),
        (["run", "--steps", "-2"], "argument --steps: expected an integer >= 0, got '-2'"),
        (["run", "--steps", "ten"], "argument --steps: expected an integer >= 0, got 'ten'"),
        (["run", "--replicates", "0"], "argument --replicates: expected an integer > 0"),
        (["run", "--transmission-rate", "-0.1"], "expected a number >= 0, got '-0.1'"),
        (["run", "--dt", "nan"], "argument --dt: expected a number > 0, got 'nan'"),
        (["run", "--dataset", "no/such/file.csv"], "'no/such/file.csv': no such file"),
        (["run", "--dataset", "synthetic:many"], "give the number of agents"),
        (["run", "--nodes", "people.csv"], "--nodes goes with an edge-list file"),
        (["run", "--r0", "2"], "--r0 does not apply to --protocol sir"),
        (["run", "--protocol", "staged-seirm", "--mortality", "0.1"], "only to seirm"),
        (["run", "--device", "meta"], "--device meta: lpm-graph runs on cpu or cuda"),
        (["run", "--device", "tpu"], "--device 'tpu' is not a device"),
        (["run", "--device", "gpu:x"], "--device 'gpu:x' is not a device"),
        (["bench", "--agents", "0"], "argument --agents: expected an integer > 0"),
        (["demo", "--steps", "-1"], "argument --steps: expected an integer >= 0"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys):
    status, _, err = _exit(argv, capsys)
    assert status == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lpm-graph")


def test_errors_found_after_parsing(tmp_path, edge_file, capsys, monkeypatch):
    edges, _ = edge_file
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases = [
        (["run", "--device", "cuda"], "--device cuda: CUDA is not available here"),
        (["bench", "--device", "cuda:1"], "CUDA is not available here"),
        (["run", "--protocol", "seirm", "--dataset", str(edges)], "needs the agents' age groups"),
        (["run", "--dataset", str(edges), "--initial-infected", "31"], "more than the 30 agents"),
        (["run", "--protocol", "seirm", "--mortality", "1.5", "--dataset", "synthetic:50"],
         "mortality"),  # refused by the library: still one line, status 2
    ]  # fmt: skip
    for argv, message in cases:
        out = ["--output", str(tmp_path / "out")] if argv[0] == "run" else []
        status, _, err = _exit([*argv, *out], capsys)
        assert status == 2, argv
        assert message in err and err.count("\n") == 1, err
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1\n1,two\n")
    status, _, err = _exit(["run", "--dataset", str(bad), "--output", str(tmp_path)], capsys)
    assert status == 2 and "bad.csv:2: node ids must be integers" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["run", "bench", "demo", "calibrate", "info"])
def test_help_of_every_command(command, capsys):
    status, text, _ = _exit([command, "--help"], capsys)
    assert status == 0
    assert text.startswith(f"usage: lpm-graph {command}")
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser = sub.choices[command]
    for action in parser._actions:  # every option is documented
        assert action.help, f"{command} {action.option_strings} has no help"
        assert action.option_strings[-1] in text


def test_help_text_names_the_outputs_and_the_choices():
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    text = sub.choices["run"].format_help()
    for word in ("results.csv", "run.json", "epidemic.png", "synthetic:N", "staged-seirm"):
        assert word in text
    assert "benchmarks/" in sub.choices["bench"].format_help()
    top = build_parser().format_help()
    assert all(c in top for c in ("run", "bench", "calibrate", "info", "demo"))


def test_bench_reports_both_passes(tmp_path, capsys):
    argv = ["bench", "--agents", "300", "--steps", "2", "--repeats", "1", "--output", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "forward + backward" in out and "benchmarks/README.md" in out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["edges"] == 300 * 10
    for name in ("forward", "forward + backward"):
        result = record["results"][name]
        assert result["seconds"] > 0 and result["agent_steps_per_s"] > 0


def test_info_lists_versions_devices_backends_and_extras(capsys, monkeypatch):
    import importlib.metadata as metadata

    import lpm_graph.graph.interop as interop

    real = metadata.version

    def version(name):
        return "2.1.0" if name == "dgl" else real(name)

    def broken():
        raise ImportError("DGL is installed but does not import with torch 9: OSError")

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(interop, "_dgl", broken)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "torch_geometric" in out and "numpy" in out
    assert f"cuda available: {torch.cuda.is_available()}" in out
    assert "aggregation backends: csr, native" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert {"matplotlib", "pyarrow", "torch-scatter", "dgl", "pymetis", "ray", "starsim",
            "covasim"} <= set(lines)  # fmt: skip
    assert "2.1.0, does not import: DGL is installed but does not import" in lines["dgl"]


def test_missing_extras_say_how_to_install(capsys, monkeypatch):
    import importlib.metadata as metadata

    def version(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (plot,) = [line for line in lines if line.startswith("  matplotlib")]
    assert "not installed (pip install 'lpm-graph[plot]')" in plot
    (ray,) = [line for line in lines if line.startswith("  ray")]
    assert "not installed (pip install ray)" in ray


def test_demo_still_runs(capsys):
    assert main(["demo", "--steps", "2"]) == 0
    assert "final attack rate" in capsys.readouterr().out


def test_device_helper_accepts_cpu():
    assert cli._device("cpu") == torch.device("cpu")
