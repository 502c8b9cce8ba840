"""Scatter (segment) reductions with torch's native ops: CPU and GPU, no extra dependency."""

from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Row sums of ``src`` (E, ...) grouped by ``index`` (E,) into (dim_size, ...); 0 if none."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_max(
    src: torch.Tensor, index: torch.Tensor, dim_size: int, chunk: int | None = None
) -> torch.Tensor:
    """Row-wise maxima of ``src`` (E, ...) grouped by ``index`` (E,); 0 for empty groups.

    Gradients flow to the maximal entries (split evenly between ties, as torch's ``amax``).
    ``chunk``: without gradients, reduce at most this many rows at a time (bounded memory for
    the expanded index; same result).
    """
    if chunk is None or torch.is_grad_enabled() or src.shape[0] <= chunk:
        out = src.new_zeros((dim_size, *src.shape[1:]))
        return out.scatter_reduce(0, _expanded(index, src), src, reduce="amax", include_self=False)
    out = src.new_full((dim_size, *src.shape[1:]), float("-inf"))
    for i in range(0, src.shape[0], chunk):
        part = src[i : i + chunk]
        out.scatter_reduce_(0, _expanded(index[i : i + chunk], part), part, reduce="amax")
    return out.masked_fill_(out == float("-inf"), 0.0)


def _expanded(index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)


def scatter_count(index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Number of entries per group: (dim_size,) int64."""
    return torch.bincount(index, minlength=dim_size)
