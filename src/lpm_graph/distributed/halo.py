"""Halo exchange: copy the owners' rows of boundary agents into every rank that reads them.

One ``all_to_all_single`` per exchange, inside an autograd Function: forward sends each rank the
rows of its halo; backward sends the gradients of those rows back to their owners, who add them
to the gradients of their own rows. A plain collective outside an autograd Function would
silently drop the gradients that cross partitions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from .heartbeat import named_failures
from .partition import Shard

__all__ = ["exchange_halo", "refresh_halo"]


def _all_to_all(
    x: Tensor, send_counts: list[int], recv_counts: list[int], group: dist.ProcessGroup | None
) -> Tensor:
    """Rows ``x`` grouped by destination rank -> rows received, grouped by source rank."""
    out = x.new_empty((sum(recv_counts), *x.shape[1:]))
    if dist.get_world_size(group) == 1:
        return out  # nothing to send to anyone
    stage = x.is_cuda and "nccl" not in str(dist.get_backend(group)).lower()
    send, recv = (x.cpu(), out.cpu()) if stage else (x, out)  # gloo takes host tensors
    wire = send.dtype == torch.bool
    if wire:  # not every backend carries bool
        send, recv = send.view(torch.uint8), recv.view(torch.uint8)
    with named_failures():
        dist.all_to_all_single(
            recv, send.contiguous(), list(recv_counts), list(send_counts), group=group
        )
    if wire:
        recv = recv.view(torch.bool)
    return recv.to(x.device) if stage else recv


class _HaloExchange(torch.autograd.Function):
    """``[owned rows of x; owners' rows of the halo]`` (see :func:`exchange_halo`)."""

    @staticmethod
    def forward(ctx, x: Tensor, shard: Shard, group: dist.ProcessGroup | None) -> Tensor:  # type: ignore[override]
        ctx.shard, ctx.group = shard, group
        rows = x.index_select(0, shard.send_index)
        halo = _all_to_all(rows, shard.send_counts, shard.recv_counts, group)
        return torch.cat([x[: shard.num_owned], halo])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        shard: Shard = ctx.shard
        owned, halo = grad[: shard.num_owned], grad[shard.num_owned :]
        # the halo rows' gradients go back to their owners (the reverse exchange) ...
        back = _all_to_all(halo.contiguous(), shard.recv_counts, shard.send_counts, ctx.group)
        out = torch.cat([owned, torch.zeros_like(halo)])  # the old halo rows were overwritten
        # ... who add them to the rows they sent (a row sent to two ranks gets both)
        out.index_add_(0, shard.send_index, back)
        return out, None, None


def exchange_halo(x: Tensor, shard: Shard, group: dist.ProcessGroup | None = None) -> Tensor:
    """``x`` with its halo rows replaced by their owners' rows; differentiable.

    Every rank of the group must call it, in the same order, with the same trailing shape and
    dtype. Gradients of the returned halo rows reach the owners' ``x``; the incoming halo rows
    of ``x`` get zero gradient (they are overwritten).

    Args:
        x: per-agent values of the local graph, owned rows first.
        shard: this rank's :class:`~lpm_graph.distributed.partition.Shard`.
        group: process group (default: the world).

    Shapes:
        ``x: [num_owned + num_halo, *F]`` -> the same.
    """
    if x.shape[0] != shard.num_local:
        raise ValueError(
            f"exchange_halo takes the {shard.num_local} local rows of rank {shard.rank}, got "
            f"{x.shape[0]}."
        )
    if x.is_floating_point() or x.is_complex():
        return _HaloExchange.apply(x, shard, group)
    halo = _all_to_all(
        x.index_select(0, shard.send_index), shard.send_counts, shard.recv_counts, group
    )
    return torch.cat([x[: shard.num_owned], halo])


def refresh_halo(
    state: Mapping[str, Tensor], shard: Shard, group: dist.ProcessGroup | None = None
) -> dict[str, Tensor]:
    """Every per-agent entry of ``state`` with fresh halo rows, in one exchange per dtype.

    Per-agent entries are the tensors whose first dimension is the number of local nodes; they
    are flattened to ``[num_local, F]``, concatenated along ``F`` (one message however many
    compartments), exchanged and split back. Other entries pass through.
    """
    out = dict(state)
    groups: dict[torch.dtype, list[str]] = {}
    for name, value in state.items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == shard.num_local:
            groups.setdefault(value.dtype, []).append(name)
    n = shard.num_local
    for names in groups.values():
        flat = [state[name].reshape(n, -1) for name in names]
        widths = [f.shape[1] for f in flat]
        packed = flat[0] if len(flat) == 1 else torch.cat(flat, 1)  # [n, F]
        fresh = exchange_halo(packed, shard, group)
        for name, part in zip(names, fresh.split(widths, 1)):
            out[name] = part.reshape(state[name].shape)
    return out
