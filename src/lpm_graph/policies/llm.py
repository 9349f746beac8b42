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
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .archetype import Archetype, Archetypes

__all__ = [
    "DEFAULT_PROMPT",
    "DecisionParseError",
    "DecisionRequestError",
    "OpenAIChatDecision",
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
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*(%?)")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


class DecisionRequestError(RuntimeError):
    """The model could not be reached or answered with an error or a malformed body."""


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
    the sampling settings: in memory, and in a JSON file when ``cache_path`` is given (read at
    construction, rewritten atomically after every step with new replies), so a rerun or a
    recomputed step asks nothing again. With replicates, one prompt per archetype and
    replicate.

    Failures: transport errors, timeouts and HTTP 408/409/425/429/5xx are retried ``retries``
    times after ``backoff * 2**k`` seconds; then :class:`DecisionRequestError` names the URL,
    the model and the last error. Other HTTP errors and malformed bodies raise it at once. A
    reply that is not a probability raises :class:`DecisionParseError` naming the archetype and
    the raw reply (it is not cached).

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
        cache_path: JSON file of cached replies (created if missing).
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
        self.cache: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.requests = 0
        """HTTP requests sent (attempts included)."""
        if self.cache_path is not None and self.cache_path.exists():
            try:
                self.cache = json.loads(self.cache_path.read_text())
            except ValueError as err:
                raise ValueError(f"cache file {self.cache_path} is not valid JSON: {err}") from err
            if not isinstance(self.cache, dict):
                raise ValueError(f"cache file {self.cache_path} does not hold a JSON object.")

    # ---------------------------------------------------------------- the decision

    def __call__(self, archetypes: Archetypes | Archetype) -> Tensor | float:
        """Probabilities ``[A]`` (``[A, R]``) for a step's archetypes, or one number for one
        archetype."""
        if isinstance(archetypes, Archetype):
            batch, rows = archetypes.batch, [archetypes.index]
        else:
            batch, rows = archetypes, list(range(archetypes.num_archetypes))
        columns = [None] if not batch.replicates else list(range(batch.replicates[0]))
        jobs = {}  # cache key -> (payload, the first archetype asking it)
        keys = []
        for a in rows:
            for r in columns:
                payload = self.payload(self.format(batch.row(a), r))
                key = self.key(payload)
                keys.append(key)
                if key not in self.cache and key not in jobs:
                    jobs[key] = (payload, a)
        replies = self._fetch_all(jobs)
        failure = None
        for key, entry in replies.items():  # cache every reply that reads, then report
            try:
                self._parse(entry["content"], batch.label(jobs[key][1]))
                self.cache[key] = entry
            except DecisionParseError as err:
                failure = failure or err
        if replies:
            self._save()
        if failure is not None:
            raise failure
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

    def _fetch_all(self, jobs: Mapping[str, tuple[dict[str, Any], int]]) -> dict[str, dict]:
        if not jobs:
            return {}
        items = list(jobs.items())
        if len(items) == 1 or self.max_workers == 1:
            contents = [self._request(payload) for _, (payload, _) in items]
        else:
            with ThreadPoolExecutor(min(self.max_workers, len(items))) as pool:
                contents = list(pool.map(lambda item: self._request(item[1][0]), items))
        return {
            key: {"model": self.model, "prompt": payload["messages"][-1]["content"], "content": c}
            for (key, (payload, _)), c in zip(items, contents)
        }

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
        last = "no attempt made"
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
                if err.code not in RETRY_STATUS:
                    raise DecisionRequestError(self._failed(attempt + 1, last)) from err
            except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            else:
                return self._content(body)
            logger.warning("request %d to %s failed: %s", attempt + 1, self.url, last)
        raise DecisionRequestError(self._failed(self.retries + 1, last))

    def _failed(self, attempts: int, last: str) -> str:
        return (f"OpenAIChatDecision: {attempts} request(s) to {self.url} (model "
                f"{self.model!r}) failed; last error: {last}")  # fmt: skip

    def _content(self, body: bytes) -> str:
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raw = body[:500].decode(errors="replace")
            raise DecisionRequestError(
                f"OpenAIChatDecision: {self.url} answered without choices[0].message.content "
                f"({err}); raw body: {raw!r}"
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

    def _save(self) -> None:
        """Write the cache file atomically (a temporary file renamed over it)."""
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, prefix=".cache-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.cache, f, indent=1, sort_keys=True, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.cache_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return (f"OpenAIChatDecision(url={self.url!r}, model={self.model!r}, "
                f"cached={len(self.cache)}, requests={self.requests})")  # fmt: skip
