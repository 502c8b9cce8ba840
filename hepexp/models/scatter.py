"""Scatter (segment) reductions with torch's native ops: CPU and GPU, no extra dependency."""

from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Row sums of ``src`` (E, ...) grouped by ``index`` (E,) into (dim_size, ...); 0 if none."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_max(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Row-wise maxima of ``src`` (E, ...) grouped by ``index`` (E,); 0 for empty groups.

    Gradients flow to the maximal entries (split evenly between ties, as torch's ``amax``).
    """
    out = src.new_zeros((dim_size, *src.shape[1:]))
    idx = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce(0, idx, src, reduce="amax", include_self=False)


def scatter_max_into(out: torch.Tensor, src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[i] = max(out[i], max of the rows of src with index i)``, in place (no gradient;
    for reductions in chunks: start from ``-inf`` and map the rows left at ``-inf`` to 0)."""
    idx = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce_(0, idx, src, reduce="amax", include_self=True)


def scatter_count(index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Number of entries per group: (dim_size,) int64."""
    return torch.bincount(index, minlength=dim_size)
