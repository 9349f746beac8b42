"""Reductions across ranks: observables (differentiable), parameter gradients, gathered rows.

Gradient bookkeeping of a partitioned run: every rank computes the *same* global loss from the
all-reduced observables. :func:`all_reduce_sum`'s backward is the identity, so each rank
backpropagates that loss through its own agents only (its share of the sum), plus what the halo
exchanges bring back from the other ranks. The gradient of a replicated parameter is then the
sum of the ranks' gradients (:func:`reduce_gradients`), not their mean. A loss term that
depends on a parameter directly (a regulariser) would be counted once per rank: add it on one
rank only, or divide it by the world size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .heartbeat import named_failures
from .partition import Shard

__all__ = [
    "all_reduce_dict",
    "all_reduce_sum",
    "distributed_backward",
    "gather_rows",
    "reduce_gradients",
]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; backward: the identity (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:  # type: ignore[override]
        out = x.clone()
        if dist.get_world_size(group) > 1:
            with named_failures():
                dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


def all_reduce_sum(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """The sum of ``x`` over the ranks, on every rank.

    Differentiable for a loss that every rank computes identically from the result: the
    backward passes the loss's gradient to this rank's ``x`` unchanged, so that summing the
    parameter gradients over ranks (:func:`reduce_gradients`) counts each agent once.
    """
    return _AllReduceSum.apply(x, group)


def all_reduce_dict(
    values: Mapping[str, Tensor], group: dist.ProcessGroup | None = None
) -> dict[str, Tensor]:
    """:func:`all_reduce_sum` of every tensor of ``values`` in one collective per dtype."""
    out: dict[str, Tensor] = {}
    groups: dict[tuple[torch.dtype, torch.device], list[str]] = {}
    for name, value in values.items():
        groups.setdefault((value.dtype, value.device), []).append(name)
    for names in groups.values():
        flat = [values[name].reshape(-1) for name in names]
        total = all_reduce_sum(flat[0] if len(flat) == 1 else torch.cat(flat), group)
        for name, part in zip(names, total.split([f.numel() for f in flat])):
            out[name] = part.reshape(values[name].shape)
    return {name: out[name] for name in values}


def reduce_gradients(
    parameters: Iterable[Tensor] | nn.Module, group: dist.ProcessGroup | None = None
) -> None:
    """Sum the ``.grad`` of replicated parameters over the ranks (in place, one collective
    per dtype and device).

    A parameter without a gradient on some ranks gets their sum (zeros there); one without a
    gradient on any rank keeps ``grad = None``. Every rank must pass the same parameters in the
    same order.
    """
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    params = [p for p in parameters if p.requires_grad]
    if dist.get_world_size(group) == 1 or not params:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for p in params:
        groups.setdefault((p.dtype, p.device), []).append(p)
    for (dtype, device), members in groups.items():
        has_grad = [p.grad is not None for p in members]
        flat = [torch.tensor(has_grad, dtype=dtype, device=device)]  # counted over the ranks
        flat += [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in members
        ]
        buffer = torch.cat(flat)
        with named_failures():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        has, *grads = buffer.split([len(members), *(p.numel() for p in members)])
        for p, flag, g in zip(members, has.tolist(), grads):
            if flag > 0:
                p.grad = g.reshape(p.shape).clone()


def distributed_backward(
    loss: Tensor,
    parameters: Iterable[Tensor] | nn.Module,
    group: dist.ProcessGroup | None = None,
) -> None:
    """``loss.backward()`` on every rank, then :func:`reduce_gradients`.

    ``loss`` is the global loss, computed identically on every rank from the trajectory of a
    partitioned run (do not divide it by the world size).
    """
    loss.backward()
    reduce_gradients(parameters, group)


@torch.no_grad()
def gather_rows(x: Tensor, shard: Shard, group: dist.ProcessGroup | None = None) -> Tensor:
    """The whole population's rows, on every rank, from each rank's owned rows (no gradient).

    Args:
        x: this rank's owned rows, ``[num_owned, *F]`` (or its local rows,
            ``[num_owned + num_halo, *F]``: the halo rows are dropped).
        shard: this rank's shard.

    Shapes:
        ``x: [num_owned, *F]`` -> ``[N, *F]`` in global agent order.
    """
    if x.shape[0] not in (shard.num_owned, shard.num_local):
        raise ValueError(
            f"gather_rows takes rank {shard.rank}'s {shard.num_owned} owned rows (or its "
            f"{shard.num_local} local rows), got {x.shape[0]}."
        )
    x = x[: shard.num_owned]
    world = dist.get_world_size(group)
    if world == 1:
        out = x.new_empty((shard.num_global_nodes, *x.shape[1:]))
        out[shard.owned_nodes] = x
        return out
    counts = torch.tensor([shard.num_owned], device=x.device)
    every = [torch.zeros_like(counts) for _ in range(world)]
    with named_failures():
        dist.all_gather(every, counts, group=group)
    width = int(max(int(c) for c in every))
    pad = lambda t: torch.cat([t, t.new_zeros((width - t.shape[0], *t.shape[1:]))])  # noqa: E731
    rows = [x.new_empty((width, *x.shape[1:])) for _ in range(world)]
    ids = [torch.empty(width, dtype=torch.long, device=x.device) for _ in range(world)]
    with named_failures():
        dist.all_gather(rows, pad(x.contiguous()), group=group)
        dist.all_gather(ids, pad(shard.owned_nodes.to(x.device)), group=group)
    out = x.new_empty((shard.num_global_nodes, *x.shape[1:]))
    for count, block, index in zip(every, rows, ids):
        out[index[: int(count)]] = block[: int(count)]
    return out
