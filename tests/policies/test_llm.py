"""OpenAIChatDecision against a local server speaking the OpenAI chat-completions API."""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from lpm_graph import PopulationGraph
from lpm_graph.policies import ArchetypePolicy, step_context
from lpm_graph.policies.llm import (
    DecisionParseError,
    DecisionRequestError,
    OpenAIChatDecision,
    ReplyCache,
    parse_probability,
)


class _Server(ThreadingHTTPServer):
    """``POST /v1/chat/completions``; ``reply(prompt, k)`` (``k``: requests so far) gives
    ``(status, content or body)``. Records every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.reply = lambda prompt, k: (200, "0.3")
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def prompts(self) -> list[str]:
        return [r["messages"][-1]["content"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            k = len(server.requests)
            server.requests.append(body)
            server.headers.append(dict(self.headers))
        if self.path != "/v1/chat/completions":
            status, content = 404, "not found"
        else:
            status, content = server.reply(body["messages"][-1]["content"], k)
        if status == 200 and not isinstance(content, bytes):
            content = json.dumps(
                {
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                }  # fmt: skip
            ).encode()
        elif not isinstance(content, bytes):
            content = json.dumps({"error": {"message": content}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(content)  # unless the client gave up (timeout test)

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _population(n: int) -> PopulationGraph:
    i = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    graph = PopulationGraph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), n)
    graph.set_node_attrs(age_group=i % 3, area=(i // 3) % 2)
    return graph


def _by_area(prompt: str, k: int) -> tuple[int, str]:
    """0.2 for area 0, a wordier 0.8 for area 1."""
    return 200, "0.2" if "area=0" in prompt else "Probability: 0.8"


def test_end_to_end_inside_an_archetype_policy(server):
    server.reply = _by_area
    n = 20_000
    graph = _population(n)
    decision = OpenAIChatDecision(server.url, "tiny-model", action="wears a mask", backoff=0)
    policy = ArchetypePolicy(decision, ("age_group", "area"))
    area = graph.node_attrs()["area"]
    infected = (torch.arange(n) % 10 == 0).float()
    for t in range(3):
        actions = policy(graph, {"infected": infected}, step_context(0, t), {"cases": 10.0 * t})
        for a, p in ((0, 0.2), (1, 0.8)):
            members = area == a
            sigma = math.sqrt(p * (1 - p) / int(members.sum()))
            assert abs(float(actions[members].mean()) - p) < 4 * sigma
    assert policy.calls == {0: 6, 1: 6, 2: 6}
    assert len(server.requests) == 18  # the day and the cases change the prompt every step
    first = server.requests[0]
    assert first["model"] == "tiny-model" and first["temperature"] == 0.0
    prompt = next(p for p in server.prompts if "archetype age_group=0, area=0 " in p)
    assert "wears a mask" in prompt and "(3334 agents) on day 0" in prompt
    assert "- infected: 0.1" in prompt and "- cases: 0" in prompt


def test_each_distinct_prompt_is_asked_once_and_cached_on_disk(server, tmp_path):
    cache = tmp_path / "replies.sqlite"
    prompt = "Group {label} of {count} agents: probability? Reply with a number."
    decision = OpenAIChatDecision(server.url, "m", prompt, cache_path=cache, backoff=0)
    policy = ArchetypePolicy(decision, ("age_group", "area"))
    graph = _population(600)
    for t in range(4):
        policy(graph, {}, step_context(0, t))
    assert policy.calls == {t: 6 for t in range(4)}
    assert len(server.requests) == 6 and len(set(server.prompts)) == 6
    stored = dict(ReplyCache(cache).items())
    assert len(stored) == 6 and {e["content"] for e in stored.values()} == {"0.3"}
    assert {e["prompt"] for e in stored.values()} == set(server.prompts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replies.sqlite"]  # no journal left
    again = OpenAIChatDecision(server.url, "m", prompt, cache_path=cache)
    ArchetypePolicy(again, ("age_group", "area"))(graph, {}, step_context(0, 9))
    assert len(server.requests) == 6 and again.requests == 0
    other_model = OpenAIChatDecision(server.url, "m2", prompt, cache_path=cache)
    ArchetypePolicy(other_model, ("age_group", "area"))(graph, {}, step_context(0, 0))
    assert len(server.requests) == 12  # the model is part of the key


def test_replies_another_decision_stored_meanwhile_are_not_asked_again(server, tmp_path):
    first, second = (OpenAIChatDecision(server.url, "m", cache_path=tmp_path / "c") for _ in "12")
    archetypes = ArchetypePolicy(first, ("age_group", "area")).summarize(
        _population(60), {}, step_context(0, 0)
    )
    first(archetypes)
    assert len(server.requests) == 6 and len(second.cache) == 0
    assert second(archetypes).tolist() == pytest.approx([0.3] * 6)
    assert len(server.requests) == 6 and second.requests == 0  # read from the file


def test_a_json_cache_of_earlier_versions_is_migrated(server, tmp_path):
    decision = OpenAIChatDecision(server.url, "m", backoff=0)
    archetypes = ArchetypePolicy(decision, "area").summarize(_population(6), {}, step_context(0, 0))
    old = {}
    for a in range(2):
        payload = decision.payload(decision.format(archetypes.row(a)))
        old[decision.key(payload)] = {"model": "m", "prompt": "...", "content": f"0.{a + 1}"}
    path = tmp_path / "replies.json"
    path.write_text(json.dumps(old, indent=1))
    migrated = OpenAIChatDecision(server.url, "m", cache_path=path)
    assert migrated(archetypes).tolist() == pytest.approx([0.1, 0.2])
    assert len(server.requests) == 0 and len(ReplyCache(path)) == 2
    assert json.loads((tmp_path / "replies.json.bak").read_text()) == old  # kept
    assert path.read_bytes().startswith(b"SQLite format 3")
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"replies.json' is neither a reply cache .*delete"):
        OpenAIChatDecision(server.url, "m", cache_path=path)


def test_one_failed_prompt_keeps_the_other_replies(server, tmp_path):
    bad = "archetype age_group=1, area=1 "
    server.reply = lambda prompt, k: (400, "context too long") if bad in prompt else (200, "0.4")
    cache = tmp_path / "replies.sqlite"
    decision = OpenAIChatDecision(server.url, "m", cache_path=cache, backoff=0)
    policy = ArchetypePolicy(decision, ("age_group", "area"))
    graph = _population(60)
    with pytest.raises(DecisionRequestError) as caught:
        policy(graph, {}, step_context(0, 0))
    message = str(caught.value)
    assert caught.value.status == 400
    assert message.startswith("OpenAIChatDecision: 1 of 6 prompt(s) failed (5 good replies cached)")
    archetypes = policy.summarize(graph, {}, step_context(0, 0))
    labels = [archetypes.label(a) for a in range(archetypes.num_archetypes)]
    index = labels.index("age_group=1, area=1")  # one prompt per archetype, in their order
    assert f"prompt {index} (archetype age_group=1, area=1): 1 request(s) to " in message
    assert "HTTP 400 Bad Request" in message and "context too long" in message
    assert len(server.requests) == 6 and len(ReplyCache(cache)) == 5
    server.reply = lambda prompt, k: (200, "0.4")
    again = OpenAIChatDecision(server.url, "m", cache_path=cache)
    ArchetypePolicy(again, ("age_group", "area"))(graph, {}, step_context(0, 0))
    assert again.requests == 1 and bad in server.prompts[-1]


def test_server_errors_are_retried_then_succeed(server):
    server.reply = lambda prompt, k: (500, "overloaded") if k < 2 else (200, "0.7")
    decision = OpenAIChatDecision(server.url, "m", retries=3, backoff=0, max_workers=1)
    policy = ArchetypePolicy(decision, "area")
    p = policy.probabilities(_population(9), {}, step_context(0, 0))
    assert p.tolist() == pytest.approx([0.7] * 9)
    assert decision.requests == len(server.requests) == 4  # area 0: 500, 500, 0.7; area 1: 0.7


def test_a_clear_error_after_the_retries_fail(server):
    server.reply = lambda prompt, k: (503, "unavailable")
    decision = OpenAIChatDecision(server.url, "m", retries=2, backoff=0.01, max_workers=1)
    policy = ArchetypePolicy(decision, "area")
    pattern = rf"3 request\(s\) to {re.escape(server.url)}/chat/completions \(model 'm'\) "
    with pytest.raises(DecisionRequestError, match=pattern + r"failed; last error: HTTP 503"):
        policy(_population(6), {}, step_context(0, 0))
    assert len(server.requests) == 3  # the server is down: the other prompt is not sent


def test_client_errors_are_not_retried_and_bodies_are_checked(server):
    server.reply = lambda prompt, k: (400, "bad model")
    decision = OpenAIChatDecision(server.url, "m", retries=3, backoff=0)
    with pytest.raises(DecisionRequestError, match=r"1 request\(s\).*HTTP 400.*bad model"):
        ArchetypePolicy(decision, "area")(_population(6), {}, step_context(0, 0))
    server.reply = lambda prompt, k: (200, b"<html>proxy error</html>")
    with pytest.raises(DecisionRequestError, match=r"without choices.*proxy error"):
        ArchetypePolicy(decision, "area")(_population(6), {}, step_context(0, 0))


def test_unreachable_server_and_timeouts_name_the_url(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    url = f"http://127.0.0.1:{port}/v1"
    decision = OpenAIChatDecision(url, "m", retries=1, backoff=0)
    with pytest.raises(DecisionRequestError, match=rf"2 request\(s\) to {re.escape(url)}"):
        ArchetypePolicy(decision, "area")(_population(6), {}, step_context(0, 0))
    server.reply = lambda prompt, k: (time.sleep(1.0), (200, "0.5"))[1]
    slow = OpenAIChatDecision(server.url, "m", retries=0, timeout=0.2, max_workers=1)
    with pytest.raises(DecisionRequestError, match=r"timed out"):
        ArchetypePolicy(slow, "area")(_population(2), {}, step_context(0, 0))


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("I would rather not say.", "no number"),
        ("Somewhere between 0.3 and 0.4", "several different numbers"),
        ("1.7", "not a probability"),
    ],
)
def test_unreadable_replies_name_the_archetype_and_the_raw_reply(server, content, why):
    server.reply = lambda prompt, k: (200, content if "area=1" in prompt else "0.5")
    decision = OpenAIChatDecision(server.url, "m", backoff=0)
    policy = ArchetypePolicy(decision, ("area",))
    with pytest.raises(DecisionParseError, match=rf"archetype area=1 .*{why}.*raw response"):
        policy(_population(6), {}, step_context(0, 0))
    assert len(decision.cache) == 1  # the readable reply (area 0) was kept


def test_replicates_ask_one_prompt_per_archetype_and_column(server):
    server.reply = lambda prompt, k: (200, "0.9" if "- infected: 1" in prompt else "0.1")
    n = 3000
    infected = torch.zeros(n, 2)
    infected[:, 1] = 1.0
    decision = OpenAIChatDecision(server.url, "m", backoff=0)
    policy = ArchetypePolicy(decision, ("area",))
    actions = policy(_population(n), {"infected": infected}, step_context(0, 0))
    assert actions.shape == (n, 2) and len(server.requests) == 4  # 2 areas x 2 columns
    assert float(actions[:, 0].mean()) < 0.2 < 0.8 < float(actions[:, 1].mean())


def test_api_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("LPM_TEST_KEY", "s3cret")
    decision = OpenAIChatDecision(server.url, "m", api_key_env="LPM_TEST_KEY", system="Be brief.")
    ArchetypePolicy(decision, "area")(_population(3), {}, step_context(0, 0))
    assert server.headers[0]["Authorization"] == "Bearer s3cret"
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "s3cret" not in repr(decision)
    monkeypatch.delenv("LPM_TEST_KEY")
    OpenAIChatDecision(server.url, "m", "{label}?", api_key_env="LPM_TEST_KEY")(
        ArchetypePolicy(lambda a: 0.5, "area").summarize(_population(3), {}, step_context(0, 1))
    )
    assert "Authorization" not in server.headers[-1]


def test_prompt_fields_and_a_single_archetype(server):
    server.reply = lambda prompt, k: (200, "0.25" if "countryside" in prompt else "0.75")
    words = lambda v: {"where": ("town", "countryside")[v["area"]], "pct": round(100 * v["x"])}  # noqa: E731
    decision = OpenAIChatDecision(server.url, "m", "In the {where}, {pct}% do it. p?", fields=words)
    archetypes = ArchetypePolicy(decision, "area").summarize(
        _population(6), {"x": torch.tensor([0.1, 0.2, 0.2, 0.1, 0.1, 0.2])}, step_context(0, 0)
    )
    assert decision(archetypes.row(1)) == 0.25  # per-archetype use returns a number
    assert server.prompts == ["In the countryside, 20% do it. p?"]


@pytest.mark.parametrize(
    ("text", "p"),
    [
        ("0.3", 0.3),
        (" 0.3.\n", 0.3),
        ("30%", 0.3),
        ("p = .25", 0.25),
        ('{"probability": 0.6}', 0.6),
        ("0.3 (30%)", 0.3),
        ("<think>maybe 0.9, or 0.1?</think>\n0.2", 0.2),
        ("1", 1.0),
    ],
)
def test_parse_probability(text, p):
    assert parse_probability(text) == pytest.approx(p)


def test_bad_settings():
    with pytest.raises(ValueError, match=r"url must be an http"):
        OpenAIChatDecision("localhost:8000", "m")
    with pytest.raises(ValueError, match=r"retries must be"):
        OpenAIChatDecision("http://x/v1", "m", retries=-1)
    decision = OpenAIChatDecision("http://x/v1/chat/completions/", "m", "{nope}")
    assert decision.url == "http://x/v1/chat/completions"
    archetypes = ArchetypePolicy(lambda a: 0.5, "area").summarize(
        _population(3), {}, step_context(0, 0)
    )
    with pytest.raises(ValueError, match=r"names 'nope'.*available"):
        decision(archetypes)
