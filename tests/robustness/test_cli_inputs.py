"""Bad command lines: every case ends with exit status 2 and one line on stderr naming the
option (or the file, or the library's argument) and the fix, before any simulation or
training starts; never a traceback. Run in process through ``lpm_graph.cli.main``.
Table-driven: each case is the argument list and a phrase of the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpm_graph.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    content = {
        "edges": "0,1\n1,2\n2,3\n",
        "empty": "",
        "header": "src,dst\n",
        "bad_line": "0,1\n1,x\n",
        "nodes": "id,age_group\n0,1\n1,2\n2,3\n3,9\n",
    }
    out = {name: folder / f"{name}.csv" for name in content}
    for name, text in content.items():
        out[name].write_text(text)
    out["folder"] = folder
    return out


def _run(files: dict[str, Path], *options: str, dataset: str = "edges") -> list[str]:
    data = str(files[dataset]) if dataset in files else dataset
    output = str(files["folder"] / "out")
    return [
        "run",
        "--no-progress",
        "--output",
        output,
        "--dataset",
        data,
        "--steps",
        "2",
        "--initial-infected",
        "1",
        *options,
    ]


HUGE = "100000000000000"
CASES = [
    # (id, argv(files), phrase of stderr)
    (
        "run --steps -1",
        lambda f: _run(f, "--steps", "-1"),
        "argument --steps: expected an integer >= 0, got '-1'",
    ),
    (
        "run --steps abc",
        lambda f: _run(f, "--steps", "abc"),
        "argument --steps: expected an integer >= 0, got 'abc'",
    ),
    ("run --steps 1e3", lambda f: _run(f, "--steps", "1e3"), "argument --steps"),
    ("run --steps beyond memory", lambda f: _run(f, "--steps", HUGE), "GiB and this machine has"),
    ("run --dt 0", lambda f: _run(f, "--dt", "0"), "argument --dt: expected a number > 0, got '0'"),
    (
        "run --dt nan",
        lambda f: _run(f, "--dt", "nan"),
        "argument --dt: expected a number > 0, got 'nan'",
    ),
    ("run --dt inf", lambda f: _run(f, "--dt", "inf"), "argument --dt"),
    (
        "run --replicates 0",
        lambda f: _run(f, "--replicates", "0"),
        "argument --replicates: expected an integer > 0",
    ),
    (
        "run --replicates beyond memory",
        lambda f: _run(f, "--replicates", HUGE),
        "replicate(s) x 2 steps needs about",
    ),
    (
        "run --seed -1",
        lambda f: _run(f, "--seed", "-1"),
        "argument --seed: expected an integer >= 0",
    ),
    (
        "run --initial-infected above the agents",
        lambda f: _run(f, "--initial-infected", "100"),
        "--initial-infected 100 is more than the 4 agents",
    ),
    (
        "run --initial-infected -1",
        lambda f: _run(f, "--initial-infected", "-1"),
        "argument --initial-infected",
    ),
    (
        "run --transmission-rate -1",
        lambda f: _run(f, "--transmission-rate", "-1"),
        "argument --transmission-rate: expected a number >= 0",
    ),
    (
        "run --transmission-rate nan",
        lambda f: _run(f, "--transmission-rate", "nan"),
        "argument --transmission-rate",
    ),
    (
        "run --recovery-rate -0.5",
        lambda f: _run(f, "--recovery-rate", "-0.5"),
        "argument --recovery-rate",
    ),
    (
        "run --mortality 2",
        lambda f: _run(f, "--protocol", "seirm", "--nodes", str(f["nodes"]), "--mortality", "2"),
        "mortality must be a probability in [0, 1]",
    ),
    (
        "run --mortality with SIR",
        lambda f: _run(f, "--mortality", "0.1"),
        "--mortality does not apply to --protocol sir",
    ),
    ("run --r0 with SIR", lambda f: _run(f, "--r0", "2"), "--r0 does not apply to --protocol sir"),
    (
        "run --order with SEIRM",
        lambda f: _run(f, "--protocol", "seirm", "--order", "recover_first"),
        "--order does not apply to --protocol seirm",
    ),
    (
        "run an unknown --protocol",
        lambda f: _run(f, "--protocol", "sis"),
        "argument --protocol: invalid choice: 'sis'",
    ),
    (
        "run an unknown --mode",
        lambda f: _run(f, "--mode", "mean"),
        "argument --mode: invalid choice: 'mean'",
    ),
    ("run --device tpu", lambda f: _run(f, "--device", "tpu"), "--device 'tpu' is not a device"),
    ("run --device cuda:99", lambda f: _run(f, "--device", "cuda:99"), "--device cuda:99"),
    (
        "run a missing --dataset file",
        lambda f: _run(f, dataset=str(f["folder"] / "none.csv")),
        "no such file; give franklin, synthetic:N or an edge-list file",
    ),
    ("run --dataset a folder", lambda f: _run(f, dataset=str(f["folder"])), "no such file"),
    (
        "run --dataset synthetic:0",
        lambda f: _run(f, dataset="synthetic:0"),
        "give the number of agents, e.g. synthetic:10000",
    ),
    (
        "run --dataset synthetic:abc",
        lambda f: _run(f, dataset="synthetic:abc"),
        "--dataset 'synthetic:abc'",
    ),
    (
        "run --dataset synthetic:-5",
        lambda f: _run(f, dataset="synthetic:-5"),
        "--dataset 'synthetic:-5'",
    ),
    (
        "run --dataset synthetic beyond memory",
        lambda f: _run(f, dataset="synthetic:" + HUGE),
        "GiB to build",
    ),
    (
        "run an empty edge file",
        lambda f: _run(f, dataset="empty"),
        "has no edges; expected 'src,dst' lines",
    ),
    (
        "run a header-only edge file",
        lambda f: _run(f, dataset="header"),
        "has no edges; expected 'src,dst' lines",
    ),
    (
        "run an edge file with a bad line",
        lambda f: _run(f, dataset="bad_line"),
        "bad_line.csv:2: node ids must be integers",
    ),
    (
        "run a missing --nodes file",
        lambda f: _run(f, "--nodes", str(f["folder"] / "nn.csv")),
        "--nodes",
    ),
    (
        "run --nodes with franklin",
        lambda f: _run(f, "--nodes", str(f["nodes"]), dataset="franklin"),
        "--nodes goes with an edge-list file as --dataset",
    ),
    (
        "run SEIRM without age groups",
        lambda f: _run(f, "--protocol", "seirm"),
        "--protocol seirm needs the agents' age groups",
    ),
    (
        "run SEIRM with age group 9",
        lambda f: _run(f, "--protocol", "seirm", "--nodes", str(f["nodes"])),
        "'age_group' has values in [1, 9]",
    ),
    (
        "run an unknown option",
        lambda f: _run(f, "--speed", "3"),
        "unrecognized arguments: --speed 3",
    ),
    ("no command", lambda f: [], "the following arguments are required: command"),
    ("an unknown command", lambda f: ["simulate"], "argument command: invalid choice: 'simulate'"),
    ("demo --dt 0", lambda f: ["demo", "--dt", "0"], "argument --dt: expected a number > 0"),
    ("demo --dt nan", lambda f: ["demo", "--dt", "nan"], "argument --dt"),
    (
        "demo --transmission-rate -1",
        lambda f: ["demo", "--transmission-rate", "-1"],
        "argument --transmission-rate",
    ),
    ("demo --seed -1", lambda f: ["demo", "--seed", "-1"], "argument --seed"),
    (
        "demo --initial-infected -1",
        lambda f: ["demo", "--initial-infected", "-1"],
        "argument --initial-infected",
    ),
    (
        "bench --agents 0",
        lambda f: ["bench", "--agents", "0"],
        "argument --agents: expected an integer > 0",
    ),
    ("bench --degree nan", lambda f: ["bench", "--degree", "nan"], "argument --degree"),
    ("bench --repeats 0", lambda f: ["bench", "--repeats", "0"], "argument --repeats"),
    (
        "bench --agents beyond memory",
        lambda f: ["bench", "--agents", HUGE],
        "choose fewer nodes or a lower degree",
    ),
    (
        "bench --degree above the agents",
        lambda f: ["bench", "--agents", "10", "--degree", "50"],
        "mean_degree must be in [0, num_nodes - 1] = [0, 9], got 50.0",
    ),
    (
        "calibrate --epochs -1",
        lambda f: ["calibrate", "--epochs", "-1"],
        "argument --epochs: expected an integer >= 0",
    ),
    ("calibrate --agents 0", lambda f: ["calibrate", "--agents", "0"], "argument --agents"),
    (
        "calibrate --lr 0",
        lambda f: ["calibrate", "--lr", "0"],
        "argument --lr: expected a number > 0",
    ),
    ("calibrate --lr nan", lambda f: ["calibrate", "--lr", "nan"], "argument --lr"),
    ("calibrate --seeds -1", lambda f: ["calibrate", "--seeds", "-1"], "argument --seeds"),
    ("calibrate --budget 0", lambda f: ["calibrate", "--budget", "0"], "argument --budget"),
    ("calibrate --patience 0", lambda f: ["calibrate", "--patience", "0"], "argument --patience"),
    (
        "calibrate --population -5",
        lambda f: ["calibrate", "--population", "-5"],
        "argument --population",
    ),
    (
        "calibrate an unknown --county",
        lambda f: ["calibrate", "--county", "99999"],
        "county '99999' is not a Massachusetts county",
    ),
    (
        "calibrate an unknown --method",
        lambda f: ["calibrate", "--method", "magic"],
        "method='magic' is not known",
    ),
    (
        "calibrate --start not a date",
        lambda f: ["calibrate", "--start", "soon"],
        "start must be an ISO date YYYY-MM-DD, got 'soon'",
    ),
]


@pytest.mark.parametrize(("argv", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line_exits_2_with_one_clear_line(files, capsys, argv, phrase):
    try:
        status = main(argv(files))
    except SystemExit as stop:  # argparse
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2
    assert phrase in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
