"""Input checks shared across the package: each error names the argument and the fix."""

from __future__ import annotations

import math
import numbers
import operator
import os

import torch
from torch import Tensor

__all__ = [
    "check_edge_index",
    "check_int",
    "check_memory",
    "check_number",
    "check_positive",
    "check_probability",
    "check_rate",
    "memory_bytes",
]


def _as_tensor(value: Tensor | float, name: str) -> Tensor:
    if torch.is_tensor(value):
        return value
    if isinstance(value, bool):  # True would be read as 1.0
        raise ValueError(f"{name} must be a number or a tensor, got {value!r}.")
    try:
        return torch.as_tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a number or a tensor, got {value!r}.") from err


def check_rate(value: Tensor | float, name: str) -> None:
    """A rate (per unit time): finite and non-negative."""
    t = _as_tensor(value, name).detach()
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real number, got dtype {t.dtype}.")
    if t.numel() == 0:
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(
            f"{name} contains NaN or infinite values; pass finite rates (per unit time)."
        )
    if bool((t < 0).any()):
        bad = t.min().item()
        raise ValueError(
            f"{name} must be a non-negative rate per unit time, got {bad:g}; "
            "rates are >= 0 (convert probabilities p per step with -log(1 - p) / dt)."
        )


def check_probability(value: Tensor | float, name: str) -> None:
    """A probability: finite and in [0, 1]."""
    t = _as_tensor(value, name).detach()
    if t.numel() == 0:
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values; pass probabilities in [0, 1].")
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(
            f"{name} must be a probability in [0, 1], got values in "
            f"[{t.min().item():g}, {t.max().item():g}]; rates convert with 1 - exp(-rate * dt)."
        )


def check_positive(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}.")


def check_int(value: object, name: str, minimum: int | None = 0) -> int:
    """An integer (Python or NumPy, or a 0-d integer tensor; not a bool) ``>= minimum``."""
    kind = {0: "a non-negative int", 1: "a positive int", None: "an int"}.get(
        minimum, f"an int >= {minimum}"
    )
    is_bool = isinstance(value, bool) or (torch.is_tensor(value) and value.dtype == torch.bool)
    if is_bool or (torch.is_tensor(value) and value.dim() > 0):
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be {kind}, got {value!r}.") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be {kind}, got {number}.")
    return number


def check_number(
    value: object,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
    unit: str = "",
) -> float:
    """A finite real number (int, float or NumPy scalar; not a bool, not a string) in the
    interval from ``low`` to ``high`` (closed unless ``open_low`` / ``open_high``)."""
    span = (
        f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        if math.isfinite(low) or math.isfinite(high)
        else ""
    )
    want = f"{name} must be a finite number{' in ' + span if span else ''}{unit}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{want}, got {value!r}.")
    number = float(value)
    inside = (number > low if open_low else number >= low) and (
        number < high if open_high else number <= high
    )
    if not math.isfinite(number) or not inside:
        raise ValueError(f"{want}, got {value!r}.")
    return number


def memory_bytes(device: torch.device | str | None = None) -> int | None:
    """The memory of ``device`` in bytes (a GPU's own memory, else this machine's physical
    memory), or ``None`` where it cannot be read."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.get_device_properties(device).total_memory)
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def check_memory(
    need: float, what: str, fix: str, device: torch.device | str | None = None
) -> None:
    """Refuse, before allocating, a job whose estimated memory ``need`` (bytes) exceeds the
    memory of ``device``: the error gives the estimate, the memory there and ``fix``."""
    total = memory_bytes(device)
    if total is not None and need > total:
        where = "this GPU" if torch.device(device or "cpu").type == "cuda" else "this machine"
        raise ValueError(
            f"{what} needs about {need / 2**30:,.1f} GiB and {where} has "
            f"{total / 2**30:,.0f} GiB of memory; {fix}."
        )


def check_edge_index(
    edge_index: object,
    num_src: int,
    num_dst: int,
    name: str = "edge_index",
    *,
    as_long: bool = True,
) -> Tensor:
    """A ``[2, E]`` integer tensor with sources in ``[0, num_src)`` and destinations in
    ``[0, num_dst)``; returned as long (as it is with ``as_long=False``: no copy)."""
    if not torch.is_tensor(edge_index):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape [2, E], got {type(edge_index).__name__}; "
            "convert with torch.as_tensor(..., dtype=torch.long)."
        )
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer node ids, got dtype {edge_index.dtype}; use {name}.long()."
        )
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        hint = (
            " (it looks transposed: use edge_index.t())"
            if (edge_index.dim() == 2 and edge_index.shape[1] == 2)
            else ""
        )
        raise ValueError(
            f"{name} must have shape [2, E] (row 0 sources, row 1 destinations), got "
            f"{list(edge_index.shape)}{hint}."
        )
    if edge_index.numel() > 0:
        for row, (label, bound) in enumerate((("source", num_src), ("destination", num_dst))):
            ids = edge_index[row]
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= bound:
                bad = lo if lo < 0 else hi
                pos = int(((ids < 0) | (ids >= bound)).nonzero()[0])
                raise ValueError(
                    f"{name} has {label} id {bad} at edge {pos}, outside [0, {bound}); "
                    f"node ids must be 0..{bound - 1} (pass the right num_nodes or relabel)."
                )
    return edge_index.long() if as_long else edge_index
