"""Differentiable samplers and per-layer random streams.

Estimators
----------
``bernoulli_st(p)``
    Forward: an exact draw ``b = 1[u >= 1 - p]``, ``u ~ U[0, 1)`` (so ``p = 1`` always draws 1
    and ``p = 0`` never does), and simulated trajectories are samples of the true process.
    Backward: the straight-through estimator ``db/dp := 1`` (Bengio et al., 2013), i.e.
    ``b = hard + p - stop_gradient(p)``. For one draw it is unbiased for ``d E[b] / dp = 1``;
    through a nonlinear simulation it is biased, and the tests compare it with finite differences
    under common random numbers.
``categorical_st(logits, tau)``
    Forward: an exact draw ``k = argmax(logits + g)``, ``g ~ Gumbel(0, 1)`` (the Gumbel-max
    trick), returned one-hot. Backward: the gradient of the Gumbel-softmax relaxation
    ``softmax((logits + g) / tau)`` (Jang et al., 2017; Maddison et al., 2017). With
    ``hard=False`` the relaxed sample itself is returned.

Random streams
--------------
:class:`RandomStreams` derives one generator per ``(seed, layer name, step)`` from a
cryptographic hash, so adding a layer does not change any other layer's draws, draws do not
depend on call order, and recomputation (gradient checkpointing) replays the same numbers.

torch's CPU generator fills a tensor on one thread (~2.9 ns per number here, a fifth of an SIR
step at 1e7 agents), so on the CPU a draw of more than :data:`CHUNK` numbers is cut into
chunks of :data:`CHUNK`, each from its own generator keyed ``(seed, name, step, chunk)`` (the
first chunk from the stream's own generator, so shorter draws are unchanged), filled in
parallel on torch's threads. The numbers depend on the chunk size, never on the thread count.
The simulator also fills each step's chunked draws one step ahead, in the background, while
the step before takes its totals (:meth:`RandomStreams.draw_ahead`): the same numbers, drawn
earlier.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

__all__ = ["CHUNK", "RandomStreams", "bernoulli_st", "categorical_st", "flow_st"]

#: numbers per chunk of a CPU draw (each chunk from its own generator; see the module docstring)
CHUNK = 2**17

_pool: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool)
_pool_lock = threading.Lock()
_DRAWN_KEPT = 64  # chunked draws remembered for draw_ahead (a run without it keeps no more)


def _forget_pool_in_child() -> None:
    """A forked child inherits the pool but not its threads: its first fill would wait forever."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _fill_pool(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool for filling chunks, rebuilt when the number of workers changes."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != workers:
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            _pool = (workers, ThreadPoolExecutor(workers, thread_name_prefix="lpm-graph-draws"))
        return _pool[1]


class RandomStreams:
    """Seeded, independent random streams keyed by layer name and step.

    With a sequence of seeds the streams serve an ensemble: every draw has one column per
    seed (its last dimension), and column ``i`` holds exactly the numbers a run with
    ``seeds[i]`` alone draws for the rest of the shape. A run whose replicate columns are the
    members of an ensemble thus equals, column by column, the separate runs of its seeds.

    Args:
        seed: the run's seed (any int), or one seed per replicate column.
        device: device of the generators (that of the graph).
    """

    def __init__(self, seed: int | Sequence[int], device: torch.device | str = "cpu") -> None:
        self.seed: int | tuple[int, ...] = _check_seed(seed)
        self._ahead: dict[tuple, _Ahead] = {}  # draws being filled in the background
        self._drawn: dict[tuple, None] = {}  # the chunked draws since the last draw_ahead
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'."
            ) from None

    @property
    def members(self) -> tuple[int, ...] | None:
        """The ensemble's seeds (one per replicate column), or ``None`` for a single seed."""
        return self.seed if isinstance(self.seed, tuple) else None

    def key(self, name: str, step: int, seed: int | None = None, chunk: int = 0) -> int:
        """The 63-bit key of stream ``(seed, name, step)`` (``seed``: the run's by default),
        or of its ``chunk``-th chunk of :data:`CHUNK` numbers (chunk 0: the stream's own)."""
        seed = self.seed if seed is None else seed
        text = f"{seed}\x1f{name}\x1f{step}" + (f"\x1f{chunk}" if chunk else "")
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & (2**63 - 1)

    def generator(self, name: str, step: int = 0) -> torch.Generator:
        """A fresh generator for layer ``name`` at ``step`` (single-seed streams only)."""
        if self.members is not None:
            raise ValueError(
                f"stream {name!r} asks for one generator, which an ensemble over "
                f"{len(self.members)} seeds cannot split by seed; draw with "
                "streams.uniform(...) (one column per seed), or run the seeds one by one."
            )
        return self._generator(self.key(name, step))

    def uniform(self, name: str, step: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """``U[0, 1)`` numbers of ``shape`` from stream ``(name, step)``; for an ensemble,
        ``shape[-1]`` must be the number of seeds, and column ``i`` comes from ``seeds[i]``."""
        shape = tuple(shape)
        members = self.members
        if members is None:
            key = (name, step, shape, dtype)
            if self._chunked(shape):
                self._drawn[key] = None
                if len(self._drawn) > _DRAWN_KEPT:
                    del self._drawn[next(iter(self._drawn))]
            ahead = self._ahead.pop(key, None)
            if ahead is not None:
                return ahead.result()
            return self._draw(name, step, None, shape, dtype)
        if not shape or shape[-1] != len(members):
            raise ValueError(
                f"stream {name!r} draws shape {list(shape)} in an ensemble of {len(members)} "
                f"seeds; every draw needs one column per seed (last dimension {len(members)}). "
                "A draw shared by all replicates cannot match each seed's own run: draw per "
                "replicate, or run the seeds one by one."
            )
        columns = [self._draw(name, step, seed, shape[:-1], dtype) for seed in members]
        return torch.stack(columns, dim=-1)

    def draw_ahead(self, step: int, next_step: int) -> None:
        """Start filling, in the background, the numbers that step ``next_step`` will draw if
        it draws what step ``step`` drew: every chunked draw ``(name, step, shape, dtype)``
        since the last call (single seed, CPU, more than :data:`CHUNK` numbers, more than one
        torch thread). :meth:`uniform` then returns them when asked; the numbers are those it
        would draw, so a draw ahead that is never asked for costs time, never a result.

        The simulator calls it after each step's phases, so that the next step's draws (a
        fifth of an SIR step at 1e6 agents on 2 cores) fill while this step's totals and the
        next step's force of infection are computed."""
        drawn, self._drawn = self._drawn, {}
        # one core: nothing to fill on; step 0: a draw at a fixed step (an agent attribute
        # drawn with step=0) cannot be told from the step's own, and would be filled for nothing
        if torch.get_num_threads() < 2 or step == 0:
            return
        for name, at, shape, dtype in drawn:
            key = (name, next_step, shape, dtype)
            if at == step and key not in self._ahead:
                self._ahead[key] = self._fill(name, next_step, None, shape, dtype)

    def forget_ahead(self) -> None:
        """Drop the draws filled ahead that nobody asked for, once their fills have ended (an
        error of a fill nobody asked for is dropped with it)."""
        aheads, self._ahead = list(self._ahead.values()), {}
        self._drawn.clear()
        for ahead in aheads:
            ahead.wait()

    def _chunked(self, shape: tuple[int, ...]) -> bool:
        return self.device.type == "cpu" and math.prod(shape) > CHUNK

    def _draw(
        self, name: str, step: int, seed: int | None, shape: tuple[int, ...], dtype: torch.dtype
    ) -> Tensor:
        """One seed's numbers of stream ``(name, step)``: chunked and parallel on the CPU."""
        if not self._chunked(shape):
            gen = self._generator(self.key(name, step, seed))
            return torch.rand(shape, generator=gen, dtype=dtype, device=self.device)
        return self._fill(name, step, seed, shape, dtype).result()

    def _fill(
        self, name: str, step: int, seed: int | None, shape: tuple[int, ...], dtype: torch.dtype
    ) -> _Ahead:
        """Start filling a chunked draw on the pool's threads (in this one with one torch
        thread); the result waits for the chunks."""
        size = CHUNK  # the chunk size, read once
        out = torch.empty(math.prod(shape), dtype=dtype, device=self.device)
        chunks = range(math.ceil(out.numel() / size))
        # an inference tensor may only be written in inference mode, which is per thread
        inference = torch.is_inference_mode_enabled()

        def fill(k: int) -> None:
            gen = self._generator(self.key(name, step, seed, chunk=k))
            with torch.inference_mode(inference):
                out[k * size : (k + 1) * size].uniform_(generator=gen)

        workers = min(torch.get_num_threads(), len(chunks))
        if workers > 1:  # uniform_ releases the GIL
            pool = _fill_pool(workers)
            return _Ahead(out.view(shape), [pool.submit(fill, k) for k in chunks])
        for k in chunks:
            fill(k)
        return _Ahead(out.view(shape), [])

    def _generator(self, key: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(key)
        return gen

    def __repr__(self) -> str:
        return f"RandomStreams(seed={self.seed}, device={self.device})"


class _Ahead:
    """A draw whose chunks are being filled: :meth:`result` waits for them."""

    __slots__ = ("futures", "out")

    def __init__(self, out: Tensor, futures: list) -> None:
        self.out, self.futures = out, futures

    def result(self) -> Tensor:
        for future in self.futures:
            future.result()  # re-raises a fill's error
        self.futures = []
        return self.out

    def wait(self) -> None:
        """Wait for the fills, ignoring their errors (for a draw nobody will read)."""
        for future in self.futures:
            future.exception()
        self.futures = []


def _check_seed(seed: object) -> int | tuple[int, ...]:
    def is_int(x: object) -> bool:  # Python and NumPy ints, not bools
        return isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_)

    if is_int(seed):
        return int(seed)  # type: ignore[call-overload]
    if isinstance(seed, Sequence | range | np.ndarray) and not isinstance(seed, str | bytes):
        seeds = tuple(seed)
        if seeds and all(is_int(x) for x in seeds):
            return tuple(int(x) for x in seeds)  # type: ignore[call-overload]
        if not seeds:
            raise ValueError("seed is an empty sequence; give an int or at least one seed.")
    raise ValueError(
        f"seed must be an int or a sequence of ints (one per replicate), got {seed!r}."
    )


def _survival(p: Tensor | None, survival: Tensor | None) -> Tensor:
    """``1 - p`` from exactly one of ``p`` and ``survival``."""
    if (p is None) == (survival is None):
        raise ValueError("give exactly one of p and survival (= 1 - p).")
    return 1 - p if survival is None else survival


def _check_probabilities(p: Tensor | None, survival: Tensor | None) -> None:
    """The one of ``p`` and ``survival`` given: a floating tensor of values in [0, 1]."""
    if (p is None) == (survival is None):
        raise ValueError("give exactly one of p and survival (= 1 - p).")
    name, value = ("p", p) if survival is None else ("survival", survival)
    if not torch.is_tensor(value) or not value.is_floating_point():
        kind = f"dtype {value.dtype}" if torch.is_tensor(value) else type(value).__name__
        raise ValueError(
            f"{name} must be a floating-point tensor of probabilities, got {kind}; convert "
            "with torch.as_tensor(..., dtype=torch.float32)."
        )
    outside = (value < 0) | (value > 1) | value.isnan()
    if value.device.type != "cpu":
        # no host synchronisation in a step loop on an accelerator: the device raises
        # asynchronously (at the next synchronisation) instead
        torch._assert_async(~outside.any(), f"{name} must hold probabilities in [0, 1].")
        return
    if bool(outside.any()):  # NaN would never draw 1, p > 1 always: both silently wrong
        bad = value.detach()[outside].reshape(-1)[0].item()
        raise ValueError(f"{name} must hold probabilities in [0, 1], got {bad}.")


def _check_uniform(uniform: Tensor, like: Tensor) -> None:
    try:
        fits = torch.broadcast_shapes(uniform.shape, like.shape) == uniform.shape
    except (AttributeError, RuntimeError):  # not a tensor, or shapes that do not broadcast
        fits = False
    if not fits:
        shape = list(uniform.shape) if torch.is_tensor(uniform) else type(uniform).__name__
        raise ValueError(
            f"uniform has shape {shape}; it must be a tensor with one number per draw, whose "
            f"shape the probabilities {list(like.shape)} broadcast to."
        )


def bernoulli_st(
    p: Tensor | None = None,
    *,
    survival: Tensor | None = None,
    shape: tuple[int, ...] | None = None,
    generator: torch.Generator | None = None,
    uniform: Tensor | None = None,
) -> Tensor:
    """Exact Bernoulli(``p``) draws with the straight-through gradient ``db/dp = 1``.

    The draw is ``b = 1[u >= 1 - p]`` with ``u ~ U[0, 1)``. Give either ``p`` or its complement
    ``survival = 1 - p`` (cheaper when the caller has it, e.g. ``exp(-lambda dt)``); both give
    the same draws for the same ``u``, with or without gradients.

    Args:
        p: probabilities in [0, 1].
        survival: ``1 - p`` instead of ``p``.
        shape: shape of the draws when ``p`` (or ``survival``) is a scalar to broadcast.
        generator: random stream (ignored when ``uniform`` is given).
        uniform: pre-drawn ``U[0, 1)`` numbers (common random numbers).

    Returns:
        0.0 / 1.0 draws of ``shape`` (default: that of ``p``), in ``p``'s dtype; gradients pass
        to ``p`` (or ``-1`` to ``survival``).
    """
    _check_probabilities(p, survival)
    q = _survival(p, survival)
    if uniform is None:
        size = tuple(shape) if shape is not None else tuple(q.shape)
        uniform = torch.rand(size, generator=generator, dtype=q.dtype, device=q.device)
    _check_uniform(uniform, q)
    hard = (uniform >= q).to(q.dtype)
    if q.requires_grad:
        return hard + (q.detach() - q)
    return hard


def flow_st(
    source: Tensor,
    *,
    p: Tensor | None = None,
    survival: Tensor | None = None,
    generator: torch.Generator | None = None,
    uniform: Tensor | None = None,
) -> Tensor:
    """``b * source`` with ``b ~ Bernoulli(p)``, differentiated through its conditional mean.

    Forward: the exact flow ``1[u >= 1 - p] * source``. Backward: the gradient of
    ``p * source`` (the flow's expectation given ``source``), for both ``p`` and ``source``.
    Compared with :func:`bernoulli_st` (whose backward uses the drawn ``b`` as the factor of
    ``d source``), this does not carry derivatives through draws of agents that are no longer
    in ``source``, and for a compartment emptied by successive steps
    (``x_{t+1} = x_t - flow_t``) it is unbiased for ``d E[x_T]`` given the hazards.
    """
    q = _survival(p, survival)
    if uniform is None:
        uniform = torch.rand(
            source.shape, generator=generator, dtype=source.dtype, device=source.device
        )
    hard = (uniform >= q).to(source.dtype) * source
    if not (q.requires_grad or source.requires_grad):
        return hard
    mean = (1 - q) * source if p is None else p * source
    return hard + (mean - mean.detach())


def categorical_st(
    logits: Tensor,
    *,
    tau: float = 1.0,
    hard: bool = True,
    generator: torch.Generator | None = None,
    dim: int = -1,
) -> Tensor:
    """One-hot categorical draws with the Gumbel-softmax straight-through gradient.

    Args:
        logits: unnormalised log-probabilities, categories along ``dim``.
        tau: relaxation temperature (> 0); lower is closer to one-hot, with noisier gradients.
        hard: return exact one-hot samples (straight-through) rather than relaxed ones.
        generator: random stream.
        dim: the category dimension.
    """
    if not tau > 0:
        raise ValueError(f"tau must be a positive temperature, got {tau!r}.")
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        kind = f"dtype {logits.dtype}" if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"logits must be a floating-point tensor, got {kind}; use .float().")
    if not -max(logits.dim(), 1) <= dim < max(logits.dim(), 1):
        raise ValueError(f"dim={dim} is not a dimension of logits {list(logits.shape)}.")
    if bool(logits.isnan().any()):
        raise ValueError("logits contain NaN; every category needs a logit (-inf: never drawn).")
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    tiny = torch.finfo(logits.dtype).tiny
    gumbel = -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))
    soft = torch.softmax((logits + gumbel) / tau, dim=dim)
    if not hard:
        return soft
    index = (logits + gumbel).argmax(dim=dim, keepdim=True)
    one_hot = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return one_hot + (soft - soft.detach())
