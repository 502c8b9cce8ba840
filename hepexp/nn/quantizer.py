"""Vector quantizer with an EMA codebook (VQ-VAE), shared by the tokenizers.

The codebook is not trained by gradients: each training step moves every code towards the mean
of the encoder outputs assigned to it with exponential moving averages of the per-code counts
and sums (van den Oord et al. 2017, appendix; decay 0.99), with Laplace smoothing of the counts
so that rarely used codes do not divide by zero. Under DDP the counts and sums are summed over
all ranks before the update, so every rank keeps the same codebook. Gradients pass the
quantization unchanged (straight-through); ``commitment`` weights ||z - sg(e)||^2.

Two additions fight codebook collapse, which the original tokenizer suffers from: optional
k-means initialisation of the codebook from encoder outputs, and dead-code restarts (a code
unused for ``restart_after`` training steps is moved onto a random encoder output of the
current batch).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hepexp.errors import ConfigError


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean distance) of each row of ``z`` (N, D)."""
    out = torch.empty(len(z), dtype=torch.long, device=z.device)
    norms = (codebook * codebook).sum(1)
    for start in range(0, len(z), chunk):
        part = z[start : start + chunk]
        # ||z||^2 is the same for every code and does not change the argmin
        dist2 = torch.addmm(norms[None, :], part, codebook.T, alpha=-2.0)
        out[start : start + chunk] = dist2.argmin(1)
    return out


def kmeans(
    samples: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of ``samples`` (N, D) into ``k`` centres; returns (centres, counts).

    Centres start at distinct random samples (with small jitter when N < k); a centre that
    loses all its samples jumps to a random sample.
    """
    samples = samples.float()
    n = len(samples)
    if n == 0:
        raise ValueError("kmeans: no samples")
    device = samples.device
    if n >= k:
        first = torch.randperm(n, generator=generator)[:k].to(device)
        centres = samples[first].clone()
    else:
        first = torch.randint(n, (k,), generator=generator).to(device)
        spread = samples.std(0, keepdim=True).clamp_min(1e-6) * 1e-3
        noise = torch.randn(k, samples.shape[1], generator=generator).to(device)
        centres = samples[first] + noise * spread
    counts = torch.zeros(k, device=device)
    for _ in range(iters):
        assign = nearest_code(samples, centres)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, assign, samples)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        empty = int((~filled).sum())
        if empty:
            pick = torch.randint(n, (empty,), generator=generator).to(device)
            centres[~filled] = samples[pick]
    return centres, counts


class Quantized(NamedTuple):
    """Output of :class:`VectorQuantizer`."""

    quantized: torch.Tensor  # (N, D) codes, with straight-through gradients to the input
    indices: torch.Tensor  # (N,) int64 code index of each input row
    loss: torch.Tensor  # commitment * mean ||z - sg(code)||^2


class VectorQuantizer(nn.Module):
    """EMA vector quantizer of ``num_codes`` codes of size ``dim``.

    Args:
        num_codes, dim: codebook size.
        decay: EMA decay of the per-code counts and sums.
        eps: Laplace smoothing of the counts.
        commitment: weight of the commitment loss (beta).
        restart_after: restart codes unused for this many training steps (None: never).
        kmeans_init: the codebook must be set by :meth:`init_codebook` before training
            (``needs_init`` tells); without it codes start as standard-normal draws.
    """

    def __init__(
        self,
        num_codes: int = 4096,
        dim: int = 4,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment: float = 1.0,
        restart_after: int | None = None,
        kmeans_init: bool = False,
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1 or not 0.0 <= decay < 1.0:
            raise ConfigError(
                f"quantizer: need num_codes >= 1, dim >= 1, 0 <= decay < 1; got "
                f"{num_codes}, {dim}, {decay}"
            )
        if restart_after is not None and restart_after < 1:
            raise ConfigError(f"quantizer.restart_after must be >= 1 or null, got {restart_after}")
        self.num_codes = num_codes
        self.dim = dim
        self.decay = decay
        self.eps = eps
        self.commitment = commitment
        self.restart_after = restart_after
        self.kmeans_init = kmeans_init
        codebook = torch.randn(num_codes, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        #: codes restarted since the last call of :meth:`pop_restarts`
        self.restarts = 0

    @property
    def needs_init(self) -> bool:
        return not bool(self.initialised)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices`` (any shape) -> (..., dim)."""
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_codes):
            raise ValueError(f"token indices must be in [0, {self.num_codes})")
        return F.embedding(indices, self.codebook)

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantize ``z`` (N, dim); in training mode also update the codebook."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"quantizer expects (N, {self.dim}) inputs, got {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z32 = z.float()
            indices = nearest_code(z32.detach(), self.codebook)
            codes = self.codebook[indices]  # a copy: later in-place updates do not touch it
            if self.training and torch.is_grad_enabled():
                self._ema_update(z32.detach(), indices)
            loss = self.commitment * F.mse_loss(z32, codes)
            quantized = z32 + (codes - z32).detach()
        return Quantized(quantized.to(z.dtype), indices, loss)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        sums = torch.zeros_like(self.codebook).index_add_(0, indices, z)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.restart_after is not None:
            self._restart_dead(z)

    @torch.no_grad()
    def _restart_dead(self, z: torch.Tensor) -> None:
        """Move codes unused for ``restart_after`` steps onto random encoder outputs.

        Rank 0 draws the new codes and broadcasts them, so ranks stay identical.
        """
        dead = self.unused_steps >= self.restart_after
        n_dead = int(dead.sum())  # the same on every rank: counts were all-reduced
        if n_dead == 0:
            return
        if len(z) == 0:
            new = self.codebook[dead].clone()
        else:
            new = z[torch.randint(len(z), (n_dead,), device=z.device)]
            if n_dead > len(z):  # repeated picks: jitter them apart
                spread = z.std(0, keepdim=True).nan_to_num(0.0).clamp_min(1e-6)
                new = new + torch.randn_like(new) * spread * 1e-2
        if _distributed():
            dist.broadcast(new, src=0)
        weight = self.cluster_size.mean()
        self.codebook[dead] = new
        self.embed_sum[dead] = new * weight
        self.cluster_size[dead] = weight
        self.unused_steps[dead] = 0
        self.restarts += n_dead

    def pop_restarts(self) -> int:
        """Number of codes restarted since the last call."""
        n, self.restarts = self.restarts, 0
        return n

    @torch.no_grad()
    def init_codebook(
        self, samples: torch.Tensor, iters: int = 20, generator: torch.Generator | None = None
    ) -> None:
        """Set the codebook to the k-means centres of encoder outputs ``samples`` (N, dim).

        Under DDP rank 0's centres are broadcast to all ranks. The EMA statistics restart from
        the centres, each weighted like an average code.
        """
        centres, _ = kmeans(samples.detach(), self.num_codes, iters, generator)
        centres = centres.to(self.codebook.device)
        if _distributed():
            dist.broadcast(centres, src=0)
        weight = self.cluster_size.mean().clamp_min(1e-3)
        self.codebook.copy_(centres)
        self.cluster_size.fill_(weight)
        self.embed_sum.copy_(centres * weight)
        self.unused_steps.zero_()
        self.initialised.fill_(True)


class CodeUsage:
    """Per-code counts accumulated over an epoch -> utilisation and perplexity.

    utilisation = codes used at least once / codebook size; perplexity = exp(entropy of the
    code frequencies) (= codebook size when all codes are used equally).
    """

    def __init__(self, num_codes: int) -> None:
        self.num_codes = num_codes
        self.counts: torch.Tensor | None = None

    def reset(self) -> None:
        self.counts = None

    def update(self, indices: torch.Tensor) -> None:
        counts = torch.bincount(indices.detach().reshape(-1), minlength=self.num_codes)
        self.counts = counts if self.counts is None else self.counts + counts

    def compute(self, sync: bool = True) -> dict[str, float]:
        """Utilisation and perplexity of the counts so far (summed over DDP ranks if ``sync``)."""
        counts = self.counts
        if counts is None:
            counts = torch.zeros(self.num_codes, dtype=torch.long)
        if sync and _distributed():
            counts = counts.clone()
            dist.all_reduce(counts)
        return usage_stats(counts)


def usage_stats(counts: torch.Tensor) -> dict[str, float]:
    """Utilisation, perplexity and number of tokens of per-code ``counts``."""
    counts = torch.as_tensor(counts).double()
    total = counts.sum()
    if total == 0:
        return {"utilisation": 0.0, "perplexity": 0.0, "tokens": 0}
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "utilisation": float((counts > 0).double().mean()),
        "perplexity": float(entropy.exp()),
        "tokens": int(total),
    }
