"""The language-model reply cache under concurrent writers and a ``kill -9``: every paid reply
is kept, and a killed writer leaves a cache that opens and holds every reply it confirmed."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from lpm_graph import PopulationGraph
from lpm_graph.policies import ArchetypePolicy, step_context
from lpm_graph.policies.llm import OpenAIChatDecision, ReplyCache

# forked children start at once (a spawned one would import torch again, for seconds)
fork = pytest.importorskip("multiprocessing").get_context("fork")


@contextlib.contextmanager
def _children(*processes):
    """Start daemonic children; kill any still running at the end."""
    for w in processes:
        w.daemon = True
        w.start()
    try:
        yield processes
    finally:
        for w in processes:
            if w.is_alive():
                w.kill()
            w.join()


def _worker(url: str, cache: str, tag: str, go) -> None:
    """Four days of six archetypes' prompts, tagged, sent when ``go`` is set."""
    torch.set_num_threads(1)  # OpenMP's pool does not survive a fork (as in DataLoader workers)
    i = torch.arange(60)
    graph = PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 60)
    graph.set_node_attrs(age_group=i % 3, area=(i // 3) % 2)
    prompt = "worker " + tag + ": {label} on day {time:g}?"
    decision = OpenAIChatDecision(url, "m", prompt, cache_path=cache, max_workers=2, backoff=0)
    policy = ArchetypePolicy(decision, ("age_group", "area"))
    go.wait()
    for t in range(4):
        policy.probabilities(graph, {}, step_context(0, t))


def _writer(cache: str, first: int, confirm) -> None:
    """Store replies of 20 kB from number ``first`` on, sending each number once stored."""
    store = ReplyCache(cache)
    for k in range(first, 10**6):
        store.put(f"key{k}", {"model": "m", "prompt": f"{k} " + "x" * 20_000, "content": str(k)})
        confirm.send(k)


@pytest.fixture
def server():
    """A chat-completions server answering ``0.5`` after 0-10 ms; records the prompts."""
    prompts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompts.append(body["messages"][-1]["content"])
            time.sleep(random.uniform(0, 0.01))
            reply = {"choices": [{"message": {"role": "assistant", "content": "0.5"}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.prompts = prompts
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_processes_sharing_a_cache_keep_every_reply(server, tmp_path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    cache, go = str(tmp_path / "replies.sqlite"), fork.Event()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    # workers a and b ask different prompts; the second a asks a's prompts at the same time
    workers = [fork.Process(target=_worker, args=(url, cache, tag, go)) for tag in "aba"]
    with _children(*workers):
        go.set()
        for w in workers:
            w.join(timeout=60)
        assert [w.exitcode for w in workers] == [0, 0, 0]
    stored = dict(ReplyCache(cache).items())
    assert len(server.prompts) >= 48  # 2 tags x 4 days x 6 archetypes, some asked twice
    assert {e["prompt"] for e in stored.values()} == set(server.prompts)
    assert len(stored) == 48 and {e["content"] for e in stored.values()} == {"0.5"}


def _migrator(cache: str, tag: str, go) -> None:
    go.wait()
    ReplyCache(cache).put(tag, {"model": "m", "prompt": tag, "content": "0.2"})


def test_processes_opening_an_old_json_cache_at_once_migrate_it_once(tmp_path):
    cache = tmp_path / "replies.json"
    old = {f"old{k}": {"model": "m", "prompt": str(k), "content": "0.1"} for k in range(100)}
    cache.write_text(json.dumps(old))
    go = fork.Event()
    openers = [fork.Process(target=_migrator, args=(str(cache), f"new{k}", go)) for k in range(4)]
    with _children(*openers):
        go.set()
        for w in openers:
            w.join(timeout=60)
        assert [w.exitcode for w in openers] == [0] * 4
    stored = dict(ReplyCache(cache).items())
    assert set(stored) == {*old, "new0", "new1", "new2", "new3"}
    assert json.loads((tmp_path / "replies.json.bak").read_text()) == old


@pytest.mark.parametrize("round_", range(3))
def test_a_writer_killed_mid_write_leaves_a_usable_cache(tmp_path, round_):
    cache = tmp_path / "replies.sqlite"
    receive, confirm = fork.Pipe(duplex=False)
    writer = fork.Process(target=_writer, args=(str(cache), 0, confirm))
    with _children(writer):
        confirm.close()
        confirmed, started = -1, time.perf_counter()
        while confirmed < 20:
            assert receive.poll(60), f"the writer stopped (exit code {writer.exitcode})"
            confirmed = receive.recv()
        # at a random moment of the next write (one takes ~20 ms: journal, pages, fsyncs)
        time.sleep(random.Random(round_).uniform(0, (time.perf_counter() - started) / 21))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
    with contextlib.suppress(EOFError):  # replies confirmed before the kill took effect
        while True:
            confirmed = receive.recv()
    reopened = ReplyCache(cache)  # rolls back a half-written reply from the journal
    with contextlib.closing(sqlite3.connect(cache)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = dict(reopened.items())
    assert confirmed + 1 <= len(stored) <= confirmed + 2  # plus the one in flight, if committed
    assert all(stored[f"key{k}"]["content"] == str(k) for k in range(confirmed + 1))
    reopened.put("after", {"model": "m", "prompt": "p", "content": "0.1"})
    assert reopened.get(["after"])["after"]["content"] == "0.1"
