"""OpenAIChatDecision: an archetype's probability asked of a language model over HTTP.

The model is served behind an OpenAI-compatible chat-completions API (OpenAI, vLLM,
llama.cpp's server, Ollama, LM Studio, ...): ``POST <url>/chat/completions`` with
``{"model", "messages", ...}``, answered by ``{"choices": [{"message": {"content": ...}}]}``.
Only the standard library is used (``json``; ``urllib.request`` is imported when a request
is made), so this module needs no extra dependency and importing it costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .archetype import Archetype, Archetypes
from .reply_cache import ReplyCache

__all__ = [
    "DEFAULT_PROMPT",
    "DecisionParseError",
    "DecisionRequestError",
    "OpenAIChatDecision",
    "ReplyCache",
    "parse_probability",
]

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "Agents of a simulated population are grouped into archetypes. You decide for the "
    "archetype {label} ({count} agents) on day {time:g}.\n"
    "What it observes:\n{summary}\n\n"
    "What is the probability that an agent of this archetype {action}? "
    "Reply with a single number between 0 and 1."
)
"""The default prompt; fields: every summary name (keys, ``count``, feature means,
observables, ``t``, ``time``) plus ``label``, ``summary`` (all values, one per line) and
``action``."""

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
PROMPT_STATUS = frozenset({400, 413, 422})
"""HTTP errors about one prompt (malformed, too long, refused): a batch's other prompts are
still asked. Any other failure (unreachable server, retries spent, 401/403/404) concerns every
prompt, and the prompts not yet sent are dropped."""
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*(%?)")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


class DecisionRequestError(RuntimeError):
    """The model could not be reached or answered with an error or a malformed body.

    ``status`` is the last HTTP status (``None`` for a transport error or a malformed body; of
    a batch, the first failed prompt's)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DecisionParseError(ValueError):
    """The model's answer is not a probability."""


def parse_probability(content: str) -> float:
    """The probability in a model's reply.

    Accepted: a bare number (``"0.3"``, ``"0.3."``), a percentage (``"30%"``), a JSON object
    with a ``"probability"`` field, or a text with exactly one number in it (``"p = 0.3"``;
    a value and its own percentage, ``"0.3 (30%)"``, count as one); ``<think>...</think>``
    blocks of reasoning models are ignored. Anything else, or a value outside [0, 1], raises
    :class:`DecisionParseError` (the caller adds the archetype and the raw reply).
    """
    text = _THINK.sub("", content).strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and "probability" in value:
        value = value["probability"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = {float(value)}
    else:
        values = {float(m.group(0).rstrip(" %")) / (100 if m.group(1) else 1)
                  for m in _NUMBER.finditer(text)}  # fmt: skip
    if not values:
        raise DecisionParseError("no number in the reply")
    if len(values) > 1 and max(values) - min(values) > 1e-9:
        raise DecisionParseError(f"several different numbers in the reply {sorted(values)}")
    p = values.pop()
    if not (math.isfinite(p) and 0 <= p <= 1):
        raise DecisionParseError(f"{p:g} is not a probability in [0, 1]")
    return p


class OpenAIChatDecision:
    """A decision function for :class:`~lpm_graph.policies.ArchetypePolicy` that asks a language
    model, served over an OpenAI-compatible HTTP API, for each archetype's probability.

    Each archetype's summary fills ``prompt`` (``str.format`` with Python numbers; see
    :data:`DEFAULT_PROMPT` for the fields), one chat request per distinct prompt is sent (in
    parallel up to ``max_workers``), and the reply is read by ``parse``
    (:func:`parse_probability`). Replies are cached by a hash of the model, the messages and
    the sampling settings: in memory, and in a SQLite file when ``cache_path`` is given
    (:class:`~lpm_graph.policies.llm.ReplyCache`, which documents the format), so a rerun or
    a recomputed step asks nothing again. Each reply is written to the file as it arrives;
    processes sharing the file wait for each other's writes and see each other's replies (a
    prompt missing from memory is looked up in the file before it is sent); an older JSON
    cache file is migrated. With replicates, one prompt per archetype and replicate.

    Failures: transport errors, timeouts and HTTP 408/409/425/429/5xx are retried ``retries``
    times after ``backoff * 2**k`` seconds; other HTTP errors and malformed bodies are not.
    A step's good replies are cached whatever fails beside them; then one
    :class:`DecisionRequestError` names each failed prompt (its index in the step, archetype,
    URL, model, HTTP status and last error). An HTTP 400/413/422 concerns one prompt and the
    others are still asked; any other failure concerns them all and the prompts not yet sent
    are dropped (they are asked on the next call). A reply that is not a probability raises
    :class:`DecisionParseError` naming the archetype and the raw reply (it is not cached).

    Args:
        url: the API base (``http://localhost:8000/v1``) or the full
            ``.../chat/completions`` endpoint.
        model: the served model's name.
        prompt: the user message template.
        action: what the probability is of, e.g. ``"wears a mask today"`` (prompt field).
        system: an optional system message.
        api_key_env: environment variable holding the API key, read at each request and sent
            as ``Authorization: Bearer``; none is sent when it is unset.
        temperature: sampling temperature (``None`` to leave it to the server).
        max_tokens: reply length limit (``None`` to leave it to the server).
        extra: more request fields (e.g. ``{"seed": 0}``), part of the cache key.
        timeout: seconds per request.
        retries: retries after the first attempt.
        backoff: seconds before the first retry, doubling after each.
        cache_path: SQLite file of cached replies (created if missing; an older JSON cache
            there is migrated, the JSON kept as ``<name>.bak``).
        max_workers: concurrent requests.
        parse: reply text -> probability.
        fields: more prompt fields computed from an archetype's numbers (its
            :meth:`~lpm_graph.policies.Archetype.numbers`), e.g. words for key values or
            rounded rates (rounding makes repeated prompts, hence cache hits, likelier).
    """

    batched = True
    """Receives every archetype of a step at once (see :class:`ArchetypePolicy`)."""

    def __init__(
        self,
        url: str,
        model: str,
        prompt: str = DEFAULT_PROMPT,
        *,
        action: str = "takes the action",
        system: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        extra: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        cache_path: str | Path | None = None,
        max_workers: int = 4,
        parse: Callable[[str], float] = parse_probability,
        fields: Callable[[dict[str, int | float]], Mapping[str, Any]] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL, got {url!r}.")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be the served model's name, got {model!r}.")
        if not (isinstance(retries, int) and retries >= 0):
            raise ValueError(f"retries must be an int >= 0, got {retries!r}.")
        if not (timeout > 0 and backoff >= 0):
            raise ValueError(f"timeout must be > 0 and backoff >= 0, got {timeout!r}, {backoff!r}.")
        if not (isinstance(max_workers, int) and max_workers >= 1):
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}.")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self.prompt = prompt
        self.action = action
        self.system = system
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra = dict(extra or {})
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_workers = max_workers
        self.parse = parse
        self.fields = fields
        self.cache_path = None if cache_path is None else Path(cache_path)
        self.store = None if cache_path is None else ReplyCache(cache_path)
        """The cache file, shared with other processes (``None`` without ``cache_path``)."""
        self.cache: dict[str, dict[str, str]] = {}
        """The replies this decision has used, by key."""
        self._lock = threading.Lock()
        self.requests = 0
        """HTTP requests sent (attempts included)."""

    # ---------------------------------------------------------------- the decision

    def __call__(self, archetypes: Archetypes | Archetype) -> Tensor | float:
        """Probabilities ``[A]`` (``[A, R]``) for a step's archetypes, or one number for one
        archetype."""
        if isinstance(archetypes, Archetype):
            batch, rows = archetypes.batch, [archetypes.index]
        else:
            batch, rows = archetypes, list(range(archetypes.num_archetypes))
        columns = [None] if not batch.replicates else list(range(batch.replicates[0]))
        jobs = {}  # cache key -> (payload, label of the first archetype asking it)
        keys = []
        for a in rows:
            for r in columns:
                payload = self.payload(self.format(batch.row(a), r))
                key = self.key(payload)
                keys.append(key)
                if key not in self.cache and key not in jobs:
                    label = batch.label(a) if r is None else f"{batch.label(a)}, replicate {r}"
                    jobs[key] = (payload, label)
        if jobs and self.store is not None:  # replies other processes stored meanwhile
            self.cache.update(self.store.get(jobs))
            jobs = {k: job for k, job in jobs.items() if k not in self.cache}
        self._ask(jobs)
        labels = [batch.label(a) for a in rows for _ in columns]
        values = [self._parse(self.cache[k]["content"], s) for k, s in zip(keys, labels)]
        if isinstance(archetypes, Archetype):
            return values[0] if columns == [None] else torch.tensor(values)
        p = torch.tensor(values, dtype=batch.globals["t"].dtype, device=batch.keys.device)
        return p if columns == [None] else p.reshape(len(rows), len(columns))

    def format(self, archetype: Archetype, replicate: int | None = None) -> str:
        """The prompt of one archetype (and replicate column)."""
        numbers = archetype.numbers(replicate)
        hidden = {*archetype.batch.key_names, "count", "t", "time"}
        summary = "\n".join(
            f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
            for k, v in numbers.items()
            if k not in hidden
        )
        fields = {**numbers, "label": archetype.label, "summary": summary, "action": self.action}
        if self.fields is not None:
            fields.update(self.fields(numbers))
        try:
            return self.prompt.format(**fields)
        except (KeyError, IndexError) as err:
            raise ValueError(
                f"the prompt template names {err}, which is not an archetype field; "
                f"available: {sorted(fields)}."
            ) from err

    def payload(self, prompt: str) -> dict[str, Any]:
        """The chat-completions request body for one prompt."""
        messages = [{"role": "user", "content": prompt}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return {**body, **self.extra}

    @staticmethod
    def key(payload: Mapping[str, Any]) -> str:
        """The cache key: a SHA-256 of the request body."""
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    # ---------------------------------------------------------------- HTTP

    def _ask(self, jobs: Mapping[str, tuple[dict[str, Any], str]]) -> None:
        """Send the prompts; cache (and store) each reply that reads as it arrives; then
        raise the request failures, else the first unreadable reply."""
        if not jobs:
            return
        stop = threading.Event()  # set by a failure that concerns every prompt

        def ask(payload: dict[str, Any]) -> str | None:
            if stop.is_set():
                return None
            try:
                return self._request(payload)
            except DecisionRequestError as err:
                if err.status not in PROMPT_STATUS:
                    stop.set()
                raise

        items = list(jobs.items())
        failed, unread, dropped = [], [], []
        with ThreadPoolExecutor(min(self.max_workers, len(items))) as pool:
            futures = {pool.submit(ask, payload): i for i, (_, (payload, _)) in enumerate(items)}
            for future in as_completed(futures):
                i = futures[future]
                key, (payload, label) = items[i]
                try:
                    content = future.result()
                except DecisionRequestError as err:
                    failed.append((i, f"prompt {i} (archetype {label}): {err}", err.status))
                    continue
                if content is None:
                    dropped.append(i)
                    continue
                try:
                    self._parse(content, label)
                except DecisionParseError as err:
                    unread.append((i, err))
                    continue
                entry = {"model": self.model, "prompt": payload["messages"][-1]["content"],
                         "content": content}  # fmt: skip
                self.cache[key] = entry
                if self.store is not None:
                    self.store.put(key, entry)
        if failed:
            good = len(items) - len(failed) - len(dropped) - len(unread)
            unsent = f", prompts {sorted(dropped)} not sent after it" if dropped else ""
            more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
            raise DecisionRequestError(
                f"OpenAIChatDecision: {len(failed)} of {len(items)} prompt(s) failed ({good} "
                f"good replies cached{unsent}): "
                + "; ".join(message for _, message, _ in sorted(failed)[:3])
                + more,
                min(failed)[2],
            )
        if unread:
            raise min(unread, key=lambda u: u[0])[1]

    def _request(self, payload: Mapping[str, Any]) -> str:
        """One chat completion with retries; returns the reply's text."""
        import http.client
        import urllib.error
        import urllib.request

        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last, status = "no attempt made", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            with self._lock:
                self.requests += 1
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
            except urllib.error.HTTPError as err:
                detail = err.read()[:500].decode(errors="replace")
                last = f"HTTP {err.code} {err.reason}: {detail}"
                status = err.code
                if err.code not in RETRY_STATUS:
                    raise DecisionRequestError(self._failed(attempt + 1, last), status) from err
            except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out
                last, status = f"{type(err).__name__}: {getattr(err, 'reason', err)}", None
            else:
                return self._content(body)
            logger.warning("request %d to %s failed: %s", attempt + 1, self.url, last)
        raise DecisionRequestError(self._failed(self.retries + 1, last), status)

    def _failed(self, attempts: int, last: str) -> str:
        return (f"{attempts} request(s) to {self.url} (model {self.model!r}) failed; "
                f"last error: {last}")  # fmt: skip

    def _content(self, body: bytes) -> str:
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raw = body[:500].decode(errors="replace")
            raise DecisionRequestError(
                f"{self.url} answered without choices[0].message.content ({err}); raw body: {raw!r}"
            ) from err
        return content

    def _parse(self, content: str, label: str) -> float:
        try:
            return float(self.parse(content))
        except (ValueError, TypeError) as err:
            raise DecisionParseError(
                f"OpenAIChatDecision: could not read a probability for archetype {label} "
                f"from model {self.model!r} ({err}); raw response: {content!r}"
            ) from err

    def __repr__(self) -> str:
        return (f"OpenAIChatDecision(url={self.url!r}, model={self.model!r}, "
                f"cached={len(self.cache)}, requests={self.requests})")  # fmt: skip
