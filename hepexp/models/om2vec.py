"""model=om2vec: a VAE from the photon arrival-time histogram of one optical module to a latent.

The model is an encoder (histogram -> posterior mean and log-variance of ``latent_dim``
numbers) and a decoder (latent -> probability of every time bin). Reconstruction loss: Poisson
negative log-likelihood of the counts with rate = decoded probability x the OM's photon count.
Since the rates sum to the photon count, it equals the multinomial NLL ``-sum_j c_j log p_j`` up
to terms that do not depend on the model, so it is evaluated at the non-empty bins only.
Plus ``beta`` x the KL divergence to N(0, 1), with beta raised from 0 to ``beta`` over
``beta_warmup_steps`` (cosine, as the original; ``beta_schedule: constant`` skips it).

Two encoder/decoder pairs (chosen by ``_target_`` in the config):

* reference (``model=om2vec_reference``): the original om2vec Transformer VAE, on the dense
  log(1 + counts) input: Linear(num_bins -> 1024), per-value embedding to d = 32, three
  Transformer layers each followed by a down-projection of the sequence 1024 -> 512 -> 256 ->
  2L, mu/logvar heads; the decoder mirrors it (L -> 256 -> 512 -> 1024 -> num_bins) and ends in a
  softmax over the bins. ~15 M parameters at 6400 bins; attention over 1024-long sequences of
  scalars makes it slow.
* sparse (default, ``model=om2vec``): keeps what carries a bin's identity -- a learned vector per
  bin at the input (evaluated on the non-empty bins only, ``nn.EmbeddingBag``) and at the output
  (Linear(rank -> num_bins) + softmax) -- and replaces the Transformer stages by MLPs. An
  earlier variant that decoded to a mixture of logistic distributions in time (regressing
  photon times) learned far more slowly: sub-ns regression of a time is hard for SGD, picking a
  bin is a classification (``docs/benchmarks.md``, om2vec).
  Its latent is anchored at the OM's first non-empty bin and, with ``exact_bins`` = k (16 in
  the default config), holds the first k non-empty bins and their photon fractions exactly
  (2k deterministic coordinates, no KL); the learned coordinates describe the rest of the
  histogram (see :class:`SparseEncoder`). ``exact_bins: 0`` is the purely learned variant.

Latents handed out by :meth:`Om2Vec.encode` / ``convert`` are the posterior means.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch import nn

from hepexp.data.prometheus.datamodule import densify_batch
from hepexp.data.prometheus.preprocess import om_histograms
from hepexp.errors import ConfigError
from hepexp.models.base import HEPModule

if TYPE_CHECKING:
    from hepexp.data.prometheus.datamodule import PrometheusDataModule

Batch = Mapping[str, torch.Tensor]


def _om_rows(batch: Batch) -> torch.Tensor:
    """The OM (row) of every non-empty bin of a CSR batch."""
    offsets = batch["offsets"]
    return torch.repeat_interleave(
        torch.arange(len(offsets) - 1, device=offsets.device), offsets.diff()
    )


def histogram_batches(
    h: Mapping[str, np.ndarray], batch_size: int, device: torch.device | str
) -> Iterator[dict[str, torch.Tensor]]:
    """Model batches of ``batch_size`` OMs (the data module's CSR layout) from sparse
    histograms (:func:`~hepexp.data.prometheus.om_histograms` output)."""
    offsets = h["offsets"]
    for s in range(0, len(h["n_photons"]), batch_size):
        e = min(s + batch_size, len(h["n_photons"]))
        lo, hi = offsets[s], offsets[e]
        yield {
            "offsets": torch.from_numpy(offsets[s : e + 1] - lo).to(device),
            "bin_index": torch.from_numpy(h["bin_index"][lo:hi].astype(np.int64)).to(device),
            "bin_count": torch.from_numpy(h["bin_count"][lo:hi].astype(np.float32)).to(device),
            "n_photons": torch.from_numpy(h["n_photons"][s:e].astype(np.int64)).to(device),
        }


def _log_input(batch: Batch, num_bins: int) -> torch.Tensor:
    counts = batch["counts"] if "counts" in batch else densify_batch(batch, num_bins)
    return torch.log1p(counts.float())


# ---------------------------------------------------------------------------------------------
# Reference architecture (original om2vec)
# ---------------------------------------------------------------------------------------------
class _SequenceStage(nn.Module):
    """A Transformer layer over (B, S, d) followed by a linear map of the sequence axis S -> S'."""

    def __init__(self, length: int, new_length: int, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d, heads, ff, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.resize = nn.Linear(length, new_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer(x)
        return self.resize(x.transpose(1, 2)).transpose(1, 2)


class ReferenceEncoder(nn.Module):
    """Dense log(1 + counts) -> Linear(num_bins, width) -> per-value embedding (d) -> Transformer
    stages shrinking the sequence ``width -> ... -> 2 latent_dim`` -> mu, logvar heads."""

    def __init__(
        self,
        latent_dim: int,
        num_bins: int,
        width: int = 1024,
        stages: tuple[int, ...] = (512, 256),
        d_model: int = 32,
        heads: int = 4,
        ff: int = 128,
    ) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.inp = nn.Linear(num_bins, width)
        self.embed = nn.Linear(1, d_model)
        self.position = nn.Parameter(torch.randn(width, d_model) * 0.02)
        lengths = [width, *stages, 2 * latent_dim]
        self.stages = nn.ModuleList(
            _SequenceStage(a, b, d_model, heads, ff)
            for a, b in zip(lengths[:-1], lengths[1:], strict=True)
        )
        self.mu = nn.Linear(2 * latent_dim * d_model, latent_dim)
        self.logvar = nn.Linear(2 * latent_dim * d_model, latent_dim)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inp(_log_input(batch, self.num_bins))
        x = self.embed(x.unsqueeze(-1)) + self.position
        for stage in self.stages:
            x = stage(x)
        x = x.flatten(1)
        return self.mu(x), self.logvar(x)


class ReferenceDecoder(nn.Module):
    """Latent -> per-value embedding -> Transformer stages growing the sequence
    ``latent_dim -> ... -> width`` -> Linear(width, num_bins) -> softmax over bins."""

    def __init__(
        self,
        latent_dim: int,
        num_bins: int,
        width: int = 1024,
        stages: tuple[int, ...] = (256, 512),
        d_model: int = 32,
        heads: int = 4,
        ff: int = 128,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(1, d_model)
        self.position = nn.Parameter(torch.randn(latent_dim, d_model) * 0.02)
        lengths = [latent_dim, *stages, width]
        self.up = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(lengths[:-1], lengths[1:], strict=True)
        )
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model,
                heads,
                ff,
                dropout=0.0,
                batch_first=True,
                norm_first=True,
                activation="gelu",
            )
            for _ in self.up
        )
        self.value = nn.Linear(d_model, 1)
        self.out = nn.Linear(width, num_bins)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        x = self.embed(z.unsqueeze(-1)) + self.position
        for up, layer in zip(self.up, self.layers, strict=True):
            x = layer(up(x.transpose(1, 2)).transpose(1, 2))
        return self.out(self.value(x).squeeze(-1)).float()

    def log_prob(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        """log p of the bin of every non-empty bin of ``batch`` (nnz,)."""
        logp = torch.log_softmax(self.logits(z), dim=-1)
        return logp[_om_rows(batch), batch["bin_index"]]

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """Probabilities of all bins (B, num_bins)."""
        return torch.softmax(self.logits(z), dim=-1)


# ---------------------------------------------------------------------------------------------
# Sparse-aware architecture
# ---------------------------------------------------------------------------------------------
def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def first_bins(batch: Batch) -> torch.Tensor:
    """The first non-empty bin of every OM of a CSR batch (B,)."""
    rows = _om_rows(batch)
    first = torch.full_like(batch["offsets"][:-1], torch.iinfo(torch.int64).max)
    return first.scatter_reduce(0, rows, batch["bin_index"], "amin")


def leading_bins(batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``k`` non-empty bins (in time order) of every OM of a CSR batch.

    Returns bins (B, k) int64, photon fractions (B, k) float32 (count / the OM's photons) and
    a mask (B, k) of the slots that exist; absent slots have bin 0 and fraction 0.
    """
    offsets, index = batch["offsets"], batch["bin_index"].long()
    rows = _om_rows(batch)
    n = len(offsets) - 1
    _, order = torch.sort((rows << 32) | index)  # by OM, then bin (no host sync)
    index, count = index[order], batch["bin_count"][order].float()
    rank = torch.arange(len(index), device=index.device) - offsets[:-1][rows]
    sel = rank < k
    bins = torch.zeros(n, k, dtype=torch.int64, device=index.device)
    frac = torch.zeros(n, k, dtype=torch.float32, device=index.device)
    present = torch.zeros(n, k, dtype=torch.bool, device=index.device)
    photons = torch.zeros(n, device=index.device).index_add(0, rows, count).clamp(min=1)
    bins[rows[sel], rank[sel]] = index[sel]
    frac[rows[sel], rank[sel]] = count[sel] / photons[rows[sel]]
    present[rows[sel], rank[sel]] = True
    return bins, frac, present


class SparseEncoder(nn.Module):
    """Bag-of-bins encoder: sum over the non-empty bins j of log(1 + c_j) e_j, with e_j a learned
    ``embed_dim`` vector per bin -- the same map as the reference's Linear(num_bins -> width) on
    log(1 + counts), evaluated on the non-empty bins only (``nn.EmbeddingBag``) --, plus
    log(1 + photons) and log(1 + non-empty bins); LayerNorm and an MLP give mu and logvar.

    ``relative``: bins are counted from the OM's first non-empty bin j0 (the histogram's shape
    is what the learned dimensions encode), and latent dimension 0 is j0 / num_bins itself, a
    deterministic coordinate (no noise, no KL; ``n_fixed = 1``) that the decoder shifts its
    output by. Arrival-time patterns then share statistics at every position in the window.

    ``exact_bins`` = k > 0 (needs ``relative``): the first k non-empty bins of the OM are kept
    exactly, as 2k deterministic coordinates: dimension 0 the first bin j0 / num_bins,
    dimensions 1..k-1 the offsets of the next k-1 non-empty bins from j0 (/ num_bins),
    dimensions k..2k-1 the fractions of the OM's photons in these k bins (0 for absent bins).
    The decoder puts these fractions on these bins and spreads the remaining photons with its
    learned distribution, so an OM with at most k non-empty bins is reconstructed exactly
    (what the per-OM mixture fit does with one component per distinct time); the learned
    dimensions describe the rest.

    ``logvar_init`` starts the posterior nearly deterministic (std e^-5 at -10) so that the
    decoder sees the signal from the first step; the KL term then sets the width.
    """

    def __init__(
        self,
        latent_dim: int,
        num_bins: int,
        embed_dim: int = 256,
        hidden: int = 512,
        layers: int = 2,
        relative: bool = True,
        logvar_init: float = -10.0,
        exact_bins: int = 0,
    ) -> None:
        super().__init__()
        _check_exact_bins(exact_bins, relative, latent_dim)
        self.num_bins, self.relative, self.exact_bins = num_bins, relative, exact_bins
        self.n_fixed = 2 * exact_bins if exact_bins else int(relative)
        n_in = embed_dim + 2 + self.n_fixed
        self.bag = nn.EmbeddingBag(num_bins, embed_dim, mode="sum")
        self.norm = nn.LayerNorm(n_in)
        self.net = _mlp([n_in] + [hidden] * layers + [2 * (latent_dim - self.n_fixed)])
        with torch.no_grad():
            self.net[-1].bias[latent_dim - self.n_fixed :] = logvar_init

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        offsets, index = batch["offsets"], batch["bin_index"]
        feats = []
        if self.relative:
            first = first_bins(batch)
            index = index - first[_om_rows(batch)]
            fixed = (first.float() / self.num_bins).unsqueeze(1)  # float32 even under bf16
            if self.exact_bins:
                bins, frac, present = leading_bins(batch, self.exact_bins)
                rel = torch.where(present, bins - first[:, None], 0)[:, 1:]
                fixed = torch.cat([fixed, rel.float() / self.num_bins, frac], 1)
            feats.append(fixed)
        x = self.bag(index, offsets[:-1], per_sample_weights=torch.log1p(batch["bin_count"]))
        feats.append(torch.log1p(batch["n_photons"].to(x.dtype)).unsqueeze(1))
        feats.append(torch.log1p(offsets.diff().to(x.dtype)).unsqueeze(1))
        feats = [f.to(x.dtype) for f in feats]
        mu, logvar = self.net(self.norm(torch.cat([x, *feats], 1))).chunk(2, dim=-1)
        if self.relative:  # the deterministic coordinates stay exact (float32)
            mu = torch.cat([fixed, mu.float()], 1)
            logvar = torch.cat([torch.zeros_like(fixed), logvar.float()], 1)
        return mu, logvar


def _check_exact_bins(exact_bins: int, relative: bool, latent_dim: int) -> None:
    if exact_bins < 0 or (exact_bins and not relative):
        raise ConfigError(f"exact_bins must be >= 0 and needs relative=True, got {exact_bins}")
    if 2 * exact_bins >= latent_dim:
        raise ConfigError(
            f"exact_bins={exact_bins} takes {2 * exact_bins} latent dimensions; latent_dim "
            f"{latent_dim} leaves none to learn (use exact_bins < latent_dim / 2)"
        )


class SoftmaxDecoder(nn.Module):
    """Latent -> MLP -> ``rank`` features -> Linear(rank, num_bins) -> softmax over bins: the
    reference's output layer (one learned vector per bin, so a bin's identity needs no
    regression of a time) without its Transformer stages.

    ``relative``: the softmax is over offsets from the first bin j0 = round(num_bins z_0)
    (see :class:`SparseEncoder`); offsets past the window's end fold into its last bin, as the
    histograms are built.

    ``exact_bins`` = k: p = sum_i f_i [bin = b_i] + (1 - sum_i f_i) q, with the k exact bins
    b_i and fractions f_i read from the latent's first 2k coordinates (:class:`SparseEncoder`)
    and q the learned distribution.
    """

    def __init__(
        self,
        latent_dim: int,
        num_bins: int,
        hidden: int = 512,
        layers: int = 2,
        rank: int = 256,
        relative: bool = True,
        exact_bins: int = 0,
    ) -> None:
        super().__init__()
        _check_exact_bins(exact_bins, relative, latent_dim)
        self.num_bins, self.relative, self.exact_bins = num_bins, relative, exact_bins
        self.net = _mlp([latent_dim] + [hidden] * layers + [rank])
        self.out = nn.Linear(rank, num_bins)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(z)).float()

    def _first(self, z: torch.Tensor) -> torch.Tensor:
        return (z[:, 0].float() * self.num_bins).round().long().clamp(0, self.num_bins - 1)

    def _exact(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Absolute bins (B, k), fractions (B, k) and the learned part's weight (B,)."""
        k, z = self.exact_bins, z.float()
        first = self._first(z)
        rel = (z[:, 1:k] * self.num_bins).round().long()
        bins = (first[:, None] + torch.cat([torch.zeros_like(first)[:, None], rel], 1)).clamp(
            0, self.num_bins - 1
        )
        frac = z[:, k : 2 * k].clamp(min=0)
        return bins, frac, (1 - frac.sum(1)).clamp(min=0)

    def log_prob(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        """log p of the bin of every non-empty bin of ``batch`` (nnz,)."""
        learned = self._learned_log_prob(z, batch)
        if not self.exact_bins:
            return learned
        rows, index = _om_rows(batch), batch["bin_index"]
        bins, frac, rest = self._exact(z)
        mass = (frac[rows] * (bins[rows] == index[:, None])).sum(1)
        # log of a zero weight is -inf by value; the clamp keeps its gradient finite
        tiny = torch.finfo(mass.dtype).tiny
        return torch.logaddexp(
            rest.clamp_min(tiny).log()[rows] + learned, mass.clamp_min(tiny).log()
        )

    def _learned_log_prob(self, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        logp = torch.log_softmax(self.logits(z), dim=-1)
        rows, index = _om_rows(batch), batch["bin_index"]
        if not self.relative:
            return logp[rows, index]
        offset = index - self._first(z)[rows]
        out = logp[rows, offset.clamp(min=0)]
        last = index == self.num_bins - 1
        if last.any():  # the last bin takes every later photon: log P(offset >= r)
            r, o = rows[last], offset[last].clamp(min=0)
            later = torch.arange(self.num_bins, device=z.device)[None, :] >= o[:, None]
            tail = torch.logsumexp(logp[r].masked_fill(~later, -torch.inf), dim=1)
            out = out.masked_scatter(last, tail)
        return torch.where(offset >= 0, out, torch.full_like(out, -torch.inf))

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """Probabilities of all bins (B, num_bins)."""
        q = torch.softmax(self.logits(z), dim=-1)
        if not self.relative:
            return q
        first = self._first(z)
        offset = torch.arange(self.num_bins, device=z.device)[None, :] - first[:, None]
        p = torch.where(offset >= 0, q.gather(1, offset.clamp(min=0)), torch.zeros_like(q))
        tail = q.flip(1).cumsum(1).flip(1)  # P(offset >= r)
        p[:, -1] = tail.gather(1, (self.num_bins - 1 - first).unsqueeze(1)).squeeze(1)
        if self.exact_bins:
            bins, frac, rest = self._exact(z)
            p = (p * rest[:, None]).scatter_add(1, bins, frac)
        return p


# ---------------------------------------------------------------------------------------------
# The LightningModule
# ---------------------------------------------------------------------------------------------
class Om2Vec(HEPModule):
    """om2vec VAE (see the module docstring).

    Args:
        encoder, decoder: the two halves (``ReferenceEncoder``/``ReferenceDecoder`` or
            ``SparseEncoder``/``SoftmaxDecoder``), built with the same ``latent_dim``.
        beta, beta_warmup_steps, beta_schedule: weight of the KL term and its ramp.
        loss_norm: ``"om"``: each OM's NLL per photon, averaged over OMs (every OM counts the
            same, like the per-OM metrics); ``"photon"``: summed NLL / photons of the batch
            (bright OMs dominate, like the original's mean over all bins).
        grad_clip: gradient-norm clipping (None: off) unless ``trainer.gradient_clip_val`` is set.
        eval_batch_size, eval_max_oms, baseline_components, baseline_max_oms: evaluation
            settings (see :meth:`evaluate`).
        baseline_sigma_min: the baseline fit's width floor (ns); None: the value of
            ``baseline_sigma_grid`` with the lowest mean JS on the first ``baseline_tune_oms``
            validation OMs.
    """

    view = "om_timing"

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int = 64,
        num_bins: int = 6400,
        max_time: float = 6400.0,
        beta: float = 1e-5,
        beta_warmup_steps: int = 2000,
        beta_schedule: str = "cosine",
        loss_norm: str = "om",
        grad_clip: float | None = 1.0,
        eval_batch_size: int = 512,
        eval_max_oms: int | None = 20000,
        baseline_components: int = 16,
        baseline_max_oms: int | None = 5000,
        baseline_sigma_min: float | None = None,
        baseline_sigma_grid: Sequence[float] = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
        baseline_tune_oms: int = 2000,
        n_examples: int = 12,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if beta_schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(
                f"beta_schedule must be cosine, linear or constant, got {beta_schedule}"
            )
        if loss_norm not in ("om", "photon"):
            raise ConfigError(f"loss_norm must be 'om' or 'photon', got '{loss_norm}'")
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.num_bins, self.max_time = latent_dim, int(num_bins), float(max_time)
        self.beta_max, self.beta_warmup_steps, self.beta_schedule = (
            beta,
            beta_warmup_steps,
            beta_schedule,
        )
        self.loss_norm = loss_norm
        self.grad_clip = grad_clip
        self.eval_batch_size, self.eval_max_oms = eval_batch_size, eval_max_oms
        self.baseline_components, self.baseline_max_oms = baseline_components, baseline_max_oms
        self.baseline_sigma_min, self.baseline_tune_oms = baseline_sigma_min, baseline_tune_oms
        self.baseline_sigma_grid = tuple(float(v) for v in baseline_sigma_grid)
        self.n_examples = n_examples

    # -- model -----------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (B, latent_dim) of a batch of OMs."""
        return self.encoder(batch)

    @property
    def n_fixed(self) -> int:
        """Leading latent dimensions that are deterministic coordinates (no noise, no KL)."""
        return getattr(self.encoder, "n_fixed", 0)

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z ~ N(mu, exp(logvar)) in the learned dimensions; the fixed ones are kept."""
        noise = torch.randn_like(mu) * torch.exp(0.5 * logvar)
        noise[:, : self.n_fixed] = 0
        return mu + noise

    def reconstruct(self, batch: Batch, sample: bool = False) -> torch.Tensor:
        """Decoded bin probabilities (B, num_bins) from the posterior mean (or a sample)."""
        mu, logvar = self.encode(batch)
        return self.decoder.probs(self.sample(mu, logvar) if sample else mu)

    def beta(self, step: int | None = None) -> float:
        """The KL weight at optimiser step ``step`` (default: the current step)."""
        if self.beta_schedule == "constant" or self.beta_warmup_steps <= 0:
            return self.beta_max
        step = self.global_step if step is None else step
        x = min(step / self.beta_warmup_steps, 1.0)
        ramp = x if self.beta_schedule == "linear" else 0.5 * (1 - math.cos(math.pi * x))
        return self.beta_max * ramp

    def losses(self, batch: Batch, sample: bool = True) -> dict[str, torch.Tensor]:
        """Reconstruction NLL, KL and total loss of a batch."""
        mu, logvar = self.encode(batch)
        mu, logvar = mu.float(), logvar.float().clamp(-30.0, 20.0)
        z = self.sample(mu, logvar) if sample else mu
        logp = self.decoder.log_prob(z, batch).float()
        rows = _om_rows(batch)
        n_om = len(mu)
        nll = torch.zeros(n_om, device=mu.device).index_add(0, rows, -batch["bin_count"] * logp)
        photons = torch.zeros(n_om, device=mu.device).index_add(0, rows, batch["bin_count"])
        if self.loss_norm == "om":
            recon = (nll / photons.clamp(min=1)).mean()
        else:
            recon = nll.sum() / photons.sum().clamp(min=1)
        mu, logvar = mu[:, self.n_fixed :], logvar[:, self.n_fixed :]
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()
        return {"recon": recon, "kl": kl, "loss": recon + self.beta() * kl}

    # -- training --------------------------------------------------------------------------------
    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradient norm at ``grad_clip`` unless the trainer sets its own clipping."""
        value = gradient_clip_val if gradient_clip_val is not None else self.grad_clip
        if value:
            self.clip_gradients(optimizer, value, gradient_clip_algorithm or "norm")

    def _log(self, stage: str, out: dict[str, torch.Tensor], batch: Batch) -> None:
        n = len(batch["offsets"]) - 1
        sync = stage != "train"
        self.log(f"{stage}/loss", out["loss"], prog_bar=True, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/recon", out["recon"], batch_size=n, sync_dist=sync)
        self.log(f"{stage}/kl", out["kl"], batch_size=n, sync_dist=sync)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self._log("train", out, batch)
        self.log("train/beta", self.beta(), batch_size=len(batch["offsets"]) - 1)
        return out["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._log("val", self.losses(batch), batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._log("test", self.losses(batch), batch)

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self,
        trainer: pl.Trainer | None,
        datamodule: PrometheusDataModule,
        out_dir: Path,
        split: str = "test",
    ) -> dict:
        """Per-OM reconstruction quality on ``split`` against the fitted baseline; writes plots.

        The first ``eval_max_oms`` OMs of the split (file order) are encoded (posterior means) and
        decoded; per OM: the Jensen-Shannon distance (base 2) between the true histogram and the
        decoded bin probabilities, the Kolmogorov distance of their CDFs, the JS distance after
        merging bins by ``coarse`` (64 ns at the default binning), and the "sampling floor": the
        JS distance between the decoded distribution and a histogram of as many photons drawn
        from it (what a perfect model of the underlying distribution scores on sparse OMs).
        The first ``baseline_max_oms`` of these OMs also get the per-OM asymmetric Gaussian
        mixture fit (``baseline_components`` components, :func:`fit_asymmetric_gmm`) with the
        same metrics, and the model's numbers on exactly those OMs (keys ``baseline/...``).
        Times per OM: encoding and decoding (model, excluding data loading) vs the fit.
        """
        from hepexp.models.om2vec_eval import evaluate_om2vec

        return evaluate_om2vec(self, trainer, datamodule, Path(out_dir), split)

    # -- inference -------------------------------------------------------------------------------
    def histograms(
        self, data: ak.Array | Mapping[str, np.ndarray] | np.ndarray
    ) -> dict[str, np.ndarray]:
        """Sparse per-OM timing histograms (the layout of
        :func:`~hepexp.data.prometheus.om_histograms`) binned as in training, from Prometheus
        events (:func:`~hepexp.data.prometheus.read_events`), their ``photons``, histograms in
        that layout already, or dense (n_om, num_bins) photon counts."""
        if isinstance(data, ak.Array):
            photons = data.photons if "photons" in data.fields else data
            return om_histograms(photons, self.num_bins, self.max_time)
        if isinstance(data, Mapping):
            missing = {"offsets", "bin_index", "bin_count", "n_photons"} - set(data)
            if missing:
                raise ValueError(f"om2vec histograms: missing {sorted(missing)}")
            return dict(data)
        counts = np.asarray(data)
        if counts.ndim != 2 or counts.shape[1] != self.num_bins:
            raise ValueError(
                f"dense histograms must have shape (n_om, {self.num_bins}), got {counts.shape}"
            )
        rows, bins = np.nonzero(counts)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(counts)), out=offsets[1:])
        return {
            "offsets": offsets,
            "bin_index": bins,
            "bin_count": counts[rows, bins],
            "n_photons": counts.sum(axis=1).astype(np.int64),
        }

    @torch.no_grad()
    def encode_histograms(self, h: Mapping[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
        """Posterior means (n_om, latent_dim) float32 of sparse histograms (see
        :meth:`histograms`), ``batch_size`` OMs per forward pass, on this model's device."""
        self.eval()
        mus = [
            self.encode(b)[0].float().cpu().numpy()
            for b in histogram_batches(h, batch_size, self.device)
        ]
        return np.concatenate(mus) if mus else np.zeros((0, self.latent_dim), np.float32)

    @torch.no_grad()
    def predict(
        self,
        data: ak.Array | Mapping[str, np.ndarray] | np.ndarray | pd.DataFrame,
        mode: str = "latents",
        batch_size: int = 4096,
    ) -> pd.DataFrame | np.ndarray:
        """OM timing histograms to latents, or latents to timing distributions, in memory.

        ``mode="latents"``: ``data`` are Prometheus events, their photons, sparse histograms
        or dense (n_om, num_bins) counts (see :meth:`histograms`; photon times are binned
        exactly as in training: ``num_bins`` bins up to ``max_time`` ns after the event's
        first photon) -> a DataFrame with one row per hit OM (ordered by event, string,
        sensor): the OM's ids and position (event_index, string_id, sensor_id, x, y, z in m,
        where the input has them), n_photons, and ``latent_0 ..``: the posterior means (what
        ``convert`` writes).

        ``mode="decode"``: ``data`` are latents (such a DataFrame, or an (n, latent_dim)
        array) -> (n, num_bins) float32 probabilities of the time bins; bin i covers
        [i w, (i + 1) w) ns after the OM's event's first photon, w = max_time / num_bins, the
        last bin also every later photon.
        """
        latent_cols = [f"latent_{i}" for i in range(self.latent_dim)]
        if mode == "latents":
            h = self.histograms(data)
            mu = self.encode_histograms(h, batch_size)
            ids = ("event_index", "string_id", "sensor_id", "x", "y", "z", "n_photons")
            table = pd.DataFrame({k: h[k] for k in ids if k in h})
            return pd.concat([table, pd.DataFrame(mu, columns=latent_cols)], axis=1)
        if mode != "decode":
            raise ConfigError(f"om2vec predict mode must be 'latents' or 'decode', got '{mode}'")
        latents = data[latent_cols].to_numpy() if isinstance(data, pd.DataFrame) else data
        z = torch.tensor(np.asarray(latents, np.float32), device=self.device)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"latents must have shape (n, {self.latent_dim}), got {tuple(z.shape)}"
            )
        self.eval()
        probs = [self.decoder.probs(b).float().cpu().numpy() for b in z.split(batch_size)]
        return np.concatenate(probs) if probs else np.zeros((0, self.num_bins), np.float32)

    # -- conversion ------------------------------------------------------------------------------
    def convert(
        self,
        datamodule: PrometheusDataModule,
        input_path: Path,
        output_path: Path,
        mode: str | None = None,
        **options: Any,
    ) -> dict:
        """Prometheus Parquet -> the same events with a ``latents`` column (see
        :func:`hepexp.models.om2vec_convert.convert_latents`)."""
        from hepexp.models.om2vec_convert import convert_latents

        if mode not in (None, "latents"):
            raise ConfigError(f"om2vec convert has one mode, 'latents'; got '{mode}'")
        return convert_latents(self, datamodule, input_path, output_path, **options)
