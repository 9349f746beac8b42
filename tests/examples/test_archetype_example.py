"""examples/archetype_policy.py runs at a small size, with its Python rule and with a served
model (a local server speaking the OpenAI chat-completions API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lpm_graph.policies.llm import ReplyCache

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples/archetype_policy.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_archetype_example_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    done = _run("--agents", "600", "--days", "8", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 10_000
    assert "6 archetypes, decision calls per day: [6]" in done.stdout
    assert f"wrote {out}" in done.stdout


def test_archetype_example_with_a_served_model(tmp_path):
    pytest.importorskip("matplotlib")
    prompts = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompts.append(body["messages"][-1]["content"])
            reply = {"choices": [{"message": {"role": "assistant", "content": "0.4"}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        out, cache = tmp_path / "plot.png", tmp_path / "replies.sqlite"
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        args = ["--agents", "600", "--days", "4", "--output", str(out), "--cache", str(cache)]
        done = _run(*args, "--llm-url", url, "--model", "tiny")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert done.returncode == 0, done.stderr
    assert out.exists() and "wrote" in done.stdout
    assert 6 <= len(prompts) <= 24 and len(set(prompts)) == len(prompts)  # cached repeats
    assert any("a typical person aged 70 or older living in a town." in p for p in prompts)
    assert len(ReplyCache(cache)) == len(prompts)
