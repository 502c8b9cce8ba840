"""Distances between timing distributions and the per-OM asymmetric-Gaussian-mixture baseline.

* :func:`js_distance`: Jensen-Shannon distance (base 2, in [0, 1]) between rows of histograms,
  numpy or torch, batched. Rows are normalised first; two empty rows are at distance 0, an
  empty and a non-empty row at distance 1 (the maximum).
* :func:`fit_asymmetric_gmm`: om2vec's reference compression of an OM timing distribution: a
  mixture of up to ``n_components`` (default 16) asymmetric (split) Gaussians, each with weight,
  mode ``mu`` and separate left/right widths, fitted by maximum likelihood to the hit times with
  EM, batched over OMs (padded (OM, component, point) arrays). Binned input is fitted at the bin
  centres, weighted by the counts; OMs with at most ``n_components`` distinct times get one
  component per time. Widths are floored at ``sigma_min`` (default a quarter bin) so the
  likelihood stays bounded. The M-step has closed forms: for fixed mu and responsibilities
  r_i, with A = sum_{t<mu} r (t-mu)^2, B = sum_{t>=mu} r (t-mu)^2, W = sum r, the maximum is at
  sigma_left = A^(1/3) (A^(1/3) + B^(1/3))^(1/2) / W^(1/2) (and B for sigma_right); mu is then
  updated to the precision-weighted mean of its two sides (the maximiser of the concave
  piecewise-quadratic for fixed widths).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

__all__ = [
    "PHOTON_CLASSES",
    "AsymmetricGaussianMixture",
    "by_photon_class",
    "fit_asymmetric_gmm",
    "js_distance",
    "ks_distance",
    "multinomial_resample",
    "photon_class_name",
    "sparse_from_dense",
]


def js_distance(p, q, axis: int = -1):
    """Jensen-Shannon distance (base 2) between histograms along ``axis``; numpy or torch."""
    if isinstance(p, torch.Tensor) or isinstance(q, torch.Tensor):
        return _js_torch(torch.as_tensor(p), torch.as_tensor(q), axis)
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("histograms must be non-negative")
    sp, sq = p.sum(axis=axis, keepdims=True), q.sum(axis=axis, keepdims=True)
    p = np.divide(p, sp, out=np.zeros_like(p), where=sp > 0)
    q = np.divide(q, sq, out=np.zeros_like(q), where=sq > 0)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=axis)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=axis)
    dist = np.sqrt(np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0))
    empty_p, empty_q = np.squeeze(sp, axis) == 0, np.squeeze(sq, axis) == 0
    return np.where(empty_p & empty_q, 0.0, np.where(empty_p | empty_q, 1.0, dist))


def _js_torch(p: torch.Tensor, q: torch.Tensor, axis: int) -> torch.Tensor:
    if p.shape != q.shape:
        raise ValueError(
            f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(p.dtype, q.dtype), torch.float32)
    p, q = p.to(dtype), q.to(dtype)
    sp, sq = p.sum(dim=axis, keepdim=True), q.sum(dim=axis, keepdim=True)
    p = torch.where(sp > 0, p / sp.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(p))
    q = torch.where(sq > 0, q / sq.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(q))
    m = 0.5 * (p + q)
    safe_m = torch.where(m > 0, m, torch.ones_like(m))
    kl_p = torch.xlogy(p, p / safe_m).sum(dim=axis)
    kl_q = torch.xlogy(q, q / safe_m).sum(dim=axis)
    dist = torch.sqrt((0.5 * (kl_p + kl_q) / np.log(2.0)).clamp(0.0, 1.0))
    empty_p, empty_q = sp.squeeze(axis) == 0, sq.squeeze(axis) == 0
    one = torch.ones_like(dist)
    return torch.where(empty_p & empty_q, 0.0 * one, torch.where(empty_p | empty_q, one, dist))


def sparse_from_dense(
    counts: np.ndarray, bin_width: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, bin-centre times, counts) of the non-empty bins of dense (n, num_bins) histograms."""
    counts = np.asarray(counts)
    rows, cols = np.nonzero(counts)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(counts)), out=offsets[1:])
    return offsets, (cols + 0.5) * bin_width, counts[rows, cols].astype(np.float64)


@dataclass
class AsymmetricGaussianMixture:
    """Per-OM mixtures: arrays of shape (n_om, n_components); unused components have weight 0."""

    weights: np.ndarray
    mu: np.ndarray
    sigma_left: np.ndarray
    sigma_right: np.ndarray

    @property
    def n_parameters(self) -> int:
        """Free parameters of one OM's mixture (4 per component, weights sum to 1)."""
        return 4 * self.weights.shape[1] - 1

    def cdf(self, t: np.ndarray) -> np.ndarray:
        """Mixture CDF at times ``t`` (T,) for every OM: (n_om, T)."""
        t = np.asarray(t, dtype=np.float64)[None, None, :]
        mu, sl, sr = (a[:, :, None] for a in (self.mu, self.sigma_left, self.sigma_right))
        norm = sl + sr
        left = 2 * sl / norm * ndtr((t - mu) / sl)
        right = sl / norm + 2 * sr / norm * (ndtr((t - mu) / sr) - 0.5)
        return (self.weights[:, :, None] * np.where(t < mu, left, right)).sum(axis=1)

    def binned(self, num_bins: int, max_time: float, batch_elems: int = 8_000_000) -> np.ndarray:
        """Probability per bin of width max_time / num_bins (mass below 0 goes to the first bin,
        above max_time to the last, as the histograms are built): (n_om, num_bins)."""
        edges = np.linspace(0.0, max_time, num_bins + 1)[1:-1]
        n, k = self.weights.shape
        out = np.empty((n, num_bins))
        step = max(1, batch_elems // (k * num_bins))
        for s in range(0, n, step):
            part = AsymmetricGaussianMixture(
                *(
                    a[s : s + step]
                    for a in (self.weights, self.mu, self.sigma_left, self.sigma_right)
                )
            )
            c = part.cdf(edges)
            ones = np.ones((len(c), 1))
            out[s : s + step] = np.diff(np.concatenate([0 * ones, c, ones], axis=1), axis=1)
        return np.clip(out, 0.0, None)


def _split_normal_logpdf(x, mu, sl, sr):
    sigma = np.where(x < mu, sl, sr)
    return np.log(2.0 / np.sqrt(2 * np.pi)) - np.log(sl + sr) - 0.5 * ((x - mu) / sigma) ** 2


def fit_asymmetric_gmm(
    offsets: np.ndarray,
    times: np.ndarray,
    weights: np.ndarray | None = None,
    n_components: int = 16,
    n_iter: int = 100,
    tol: float = 1e-5,
    sigma_min: float = 0.25,
    batch_elems: int = 2_000_000,
) -> AsymmetricGaussianMixture:
    """Fit one asymmetric Gaussian mixture per OM by (weighted) maximum likelihood with EM.

    OM i owns ``times[offsets[i]:offsets[i+1]]`` (ns) with ``weights`` (counts; default 1).
    OMs are processed in batches of similar size, padded to (batch, n_components, points).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    weights = np.ones_like(times) if weights is None else np.asarray(weights, dtype=np.float64)
    n_om, k = len(offsets) - 1, int(n_components)
    sizes = np.diff(offsets)
    result = [np.zeros((n_om, k)) for _ in range(4)]
    order = np.argsort(sizes, kind="stable")
    start = 0
    while start < n_om:
        # grow the batch while the padded (batch, k, points) array stays small
        stop = start + 1
        while (
            stop < n_om and (stop - start + 1) * k * max(int(sizes[order[stop]]), 1) <= batch_elems
        ):
            stop += 1
        idx = order[start:stop]
        p_max = max(int(sizes[idx].max()), 1)
        x = np.zeros((len(idx), p_max))
        w = np.zeros((len(idx), p_max))
        cols = np.arange(p_max)[None, :]
        valid = cols < sizes[idx][:, None]
        src = offsets[idx][:, None] + np.minimum(cols, np.maximum(sizes[idx][:, None] - 1, 0))
        x[valid] = times[src[valid]]
        w[valid] = weights[src[valid]]
        fitted = _em(x, w, valid, k, n_iter, tol, sigma_min)
        for r, f in zip(result, fitted, strict=True):
            r[idx] = f
        start = stop
    return AsymmetricGaussianMixture(*result)


def _init(x, w, valid, k, sigma_min):
    """Components at the weighted quantiles (or one per point when there are few points)."""
    b, p = x.shape
    n_pts = valid.sum(axis=1)
    total = w.sum(axis=1, keepdims=True)
    mean = (w * x).sum(axis=1, keepdims=True) / np.maximum(total, 1e-300)
    std = np.sqrt((w * (x - mean) ** 2).sum(axis=1, keepdims=True) / np.maximum(total, 1e-300))
    cum = np.cumsum(w, axis=1) / np.maximum(total, 1e-300)
    levels = (np.arange(k) + 0.5) / k
    q_idx = np.minimum((cum[:, None, :] < levels[None, :, None]).sum(axis=2), p - 1)
    mu = np.take_along_axis(x, q_idx, axis=1)
    sigma = np.maximum(std / k, sigma_min) * np.ones((1, k))
    wk = np.full((b, k), 1.0 / k)
    few = n_pts <= k  # one component per point, the rest unused
    if few.any():
        j = np.minimum(np.arange(k)[None, :], p - 1)
        used = np.arange(k)[None, :] < n_pts[:, None]
        mu = np.where(few[:, None], np.take_along_axis(x, np.broadcast_to(j, (b, k)), axis=1), mu)
        wk = np.where(
            few[:, None],
            np.where(used, np.take_along_axis(w, np.broadcast_to(j, (b, k)), axis=1), 0.0),
            wk,
        )
        wk /= np.maximum(wk.sum(axis=1, keepdims=True), 1e-300)
        sigma = np.where(few[:, None], sigma_min, sigma)
    return wk, mu, sigma.copy(), sigma.copy()


def _em(x, w, valid, k, n_iter, tol, sigma_min):
    """Batched EM; OMs leave the batch once their mean log-likelihood per photon improves by
    less than ``tol``. OMs with at most k distinct times keep the one-component-per-time start
    (their maximum-likelihood solution up to the width floor)."""
    wk, mu, sl, sr = _init(x, w, valid, k, sigma_min)
    total = np.maximum(w.sum(axis=1), 1e-300)
    prev = np.full(len(x), -np.inf)
    active = np.flatnonzero(valid.sum(axis=1) > k)
    for _ in range(n_iter):
        if len(active) == 0:
            break
        xs, ws = x[active][:, None, :], w[active][:, None, :]
        a_wk, a_mu, a_sl, a_sr = wk[active], mu[active], sl[active], sr[active]
        with np.errstate(divide="ignore"):
            logp = np.log(a_wk)[:, :, None] + _split_normal_logpdf(
                xs, a_mu[:, :, None], a_sl[:, :, None], a_sr[:, :, None]
            )
        top = logp.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        dens = np.exp(logp - top)
        norm = dens.sum(axis=1, keepdims=True)
        resp = dens / np.maximum(norm, 1e-300) * ws  # count-weighted responsibilities (b, k, p)
        loglik = ((np.log(np.maximum(norm[:, 0, :], 1e-300)) + top[:, 0, :]) * w[active]).sum(
            axis=1
        ) / total[active]
        improving = loglik - prev[active] > tol
        prev[active] = loglik
        big_w = resp.sum(axis=2)
        a_wk = big_w / total[active][:, None]
        live = big_w > 1e-12
        safe_w = np.maximum(big_w, 1e-300)
        for _ in range(2):  # widths for the current mu (closed form), then mu for those widths
            d = xs - a_mu[:, :, None]
            left = d < 0
            dd = resp * d * d
            a = np.cbrt((dd * left).sum(axis=2))
            b = np.cbrt(dd.sum(axis=2) - (dd * left).sum(axis=2))
            scale = np.sqrt((a + b) / safe_w)
            a_sl = np.where(live, np.maximum(a * scale, sigma_min), a_sl)
            a_sr = np.where(live, np.maximum(b * scale, sigma_min), a_sr)
            prec = np.where(left, 1.0 / a_sl[:, :, None] ** 2, 1.0 / a_sr[:, :, None] ** 2) * resp
            new_mu = (prec * xs).sum(axis=2) / np.maximum(prec.sum(axis=2), 1e-300)
            a_mu = np.where(live, new_mu, a_mu)
        wk[active], mu[active], sl[active], sr[active] = a_wk, a_mu, a_sl, a_sr
        active = active[improving]
    return wk, mu, sl, sr


#: photon-count classes of OMs used to break per-OM metrics down: 1, 2-10, 11-100, > 100
PHOTON_CLASSES: tuple[tuple[int, int], ...] = (
    (1, 1), (2, 10), (11, 100), (101, 1000), (1001, 2**62),
)  # fmt: skip


def photon_class_name(lo: int, hi: int) -> str:
    """``"1"``, ``"2-10"``, ``">1000"``: the name of a photon-count class."""
    if lo == hi:
        return str(lo)
    return f">{lo - 1}" if hi >= 2**62 else f"{lo}-{hi}"


def by_photon_class(values: np.ndarray, n_photons: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean, median and number of OMs of ``values`` per photon-count class."""
    values, n_photons = np.asarray(values, dtype=np.float64), np.asarray(n_photons)
    out = {}
    for lo, hi in PHOTON_CLASSES:
        sel = values[(n_photons >= lo) & (n_photons <= hi)]
        out[photon_class_name(lo, hi)] = {
            "n": int(sel.size),
            "mean": float(sel.mean()) if sel.size else float("nan"),
            "median": float(np.median(sel)) if sel.size else float("nan"),
        }
    return out


def ks_distance(p, q, axis: int = -1):
    """Kolmogorov distance (max |CDF difference|) between histograms along ``axis``, each
    normalised; numpy or torch. Empty rows count as distance 1 to non-empty ones."""
    if isinstance(p, torch.Tensor) or isinstance(q, torch.Tensor):
        p, q = torch.as_tensor(p).double(), torch.as_tensor(q).double()
        sp, sq = p.sum(axis, keepdim=True), q.sum(axis, keepdim=True)
        cp = torch.cumsum(p, axis) / sp.clamp_min(1e-300)
        cq = torch.cumsum(q, axis) / sq.clamp_min(1e-300)
        dist = (cp - cq).abs().amax(axis)
        empty_p, empty_q = sp.squeeze(axis) == 0, sq.squeeze(axis) == 0
        return torch.where(empty_p ^ empty_q, torch.ones_like(dist), dist.where(~empty_p, 0.0))
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return ks_distance(torch.from_numpy(p), torch.from_numpy(q), axis).numpy()


def multinomial_resample(
    probs: np.ndarray, n_photons: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Histograms of ``n_photons[i]`` photons drawn from the distribution ``probs[i]`` (rows
    renormalised): what a detector would record if ``probs`` were the true distribution."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    return rng.multinomial(np.asarray(n_photons, dtype=np.int64), p)
