"""Evaluation of om2vec (see :meth:`hepexp.models.om2vec.Om2Vec.evaluate`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hepexp.data.prometheus.datamodule import densify_batch
from hepexp.metrics.timing import (
    PHOTON_CLASSES,
    AsymmetricGaussianMixture,
    fit_asymmetric_gmm,
    js_distance,
    ks_distance,
    multinomial_resample,
)
from hepexp.utils.io import atomic_path

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from hepexp.data.prometheus.datamodule import PrometheusDataModule
    from hepexp.models.om2vec import Om2Vec

log = logging.getLogger(__name__)
#: display bins merged for the coarse JS distance: 64 ns at the default 1 ns binning
COARSE_NS = 64.0
_CLASS_KEYS = ("n1", "n2_10", "n11_100", "n101_1000", "n1001plus")


def _first_rows(batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The first ``k`` OMs of a CSR batch."""
    offsets = batch["offsets"][: k + 1]
    nnz = int(offsets[-1])
    out = {
        key: v[:k] for key, v in batch.items() if key not in ("offsets", "bin_index", "bin_count")
    }
    out.update(
        offsets=offsets, bin_index=batch["bin_index"][:nnz], bin_count=batch["bin_count"][:nnz]
    )
    if "counts" in batch:
        out["counts"] = batch["counts"][:k]
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _coarse(x: torch.Tensor, factor: int) -> torch.Tensor:
    n = x.shape[1] // factor * factor
    head = x[:, :n].reshape(len(x), -1, factor).sum(-1)
    if n == x.shape[1]:
        return head
    return torch.cat([head, x[:, n:].sum(1, keepdim=True)], dim=1)


def _distances(
    true: torch.Tensor, probs: torch.Tensor, n_photons: np.ndarray, factor: int, rng
) -> dict[str, np.ndarray]:
    """Per-OM JS, KS, coarse JS and sampling-floor JS of dense rows."""
    probs = probs.double().cpu()
    true = true.double().cpu()
    resampled = torch.from_numpy(multinomial_resample(probs.numpy(), n_photons, rng)).double()
    return {
        "js": js_distance(true, probs).numpy(),
        "ks": ks_distance(true, probs).numpy(),
        "js_coarse": js_distance(_coarse(true, factor), _coarse(probs, factor)).numpy(),
        "js_floor": js_distance(resampled, probs).numpy(),
    }


def _summary(d: dict[str, np.ndarray], n_photons: np.ndarray, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}n_oms": int(len(n_photons))}
    for name in ("js", "ks", "js_coarse", "js_floor"):
        out[f"{prefix}{name}_mean"] = float(np.mean(d[name]))
        out[f"{prefix}{name}_median"] = float(np.median(d[name]))
    for (lo, hi), key in zip(PHOTON_CLASSES, _CLASS_KEYS, strict=True):
        sel = (n_photons >= lo) & (n_photons <= hi)
        out[f"{prefix}n_oms_{key}"] = int(sel.sum())
        for name in ("js", "js_coarse", "js_floor"):
            out[f"{prefix}{name}_mean_{key}"] = float(d[name][sel].mean()) if sel.any() else None
    return out


def _sparse_oms(
    datamodule: PrometheusDataModule, split: str, limit: int, batch_size: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The first ``limit`` OMs of ``split`` as one CSR set (offsets, bin_index, bin_count) and
    their photon counts."""
    sparse = {"offsets": [np.zeros(1, np.int64)], "bin_index": [], "bin_count": []}
    n_photons, seen = [], 0
    for batch in datamodule.loader(split, shuffle=False, batch_size=batch_size):
        if seen >= limit:
            break
        n = len(batch["offsets"]) - 1
        if seen + n > limit:
            batch, n = _first_rows(batch, limit - seen), limit - seen
        sparse["offsets"].append(batch["offsets"][1:].numpy() + sparse["offsets"][-1][-1])
        sparse["bin_index"].append(batch["bin_index"].numpy())
        sparse["bin_count"].append(batch["bin_count"].numpy())
        n_photons.append(batch["n_photons"].numpy())
        seen += n
    if seen == 0:
        return {}, np.zeros(0)
    return {k: np.concatenate(v) for k, v in sparse.items()}, np.concatenate(n_photons)


def _fit_baseline(
    csr: dict[str, np.ndarray],
    n_om: int,
    n_photons: np.ndarray,
    components: int,
    sigma_min: float,
    num_bins: int,
    max_time: float,
    factor: int,
    rng,
) -> tuple[AsymmetricGaussianMixture, dict[str, np.ndarray], float]:
    """The baseline mixture of the first ``n_om`` OMs of ``csr``, its per-OM distances and
    the fit's wall seconds."""
    width = max_time / num_bins
    offsets = csr["offsets"][: n_om + 1]
    times = (csr["bin_index"][: offsets[-1]] + 0.5) * width
    counts = csr["bin_count"][: offsets[-1]].astype(np.float64)
    start = time.perf_counter()
    fit = fit_asymmetric_gmm(offsets, times, counts, n_components=components, sigma_min=sigma_min)
    seconds = time.perf_counter() - start
    parts: dict[str, list] = {}
    for s in range(0, n_om, 256):
        e = min(s + 256, n_om)
        part = AsymmetricGaussianMixture(
            *(a[s:e] for a in (fit.weights, fit.mu, fit.sigma_left, fit.sigma_right))
        )
        true = torch.from_numpy(_dense(csr, s, e, num_bins))
        probs = torch.from_numpy(part.binned(num_bins, max_time))
        for k, v in _distances(true, probs, n_photons[s:e], factor, rng).items():
            parts.setdefault(k, []).append(v)
    return fit, {k: np.concatenate(v) for k, v in parts.items()}, seconds


def tune_baseline_floor(
    model: Om2Vec, datamodule: PrometheusDataModule, out_dir: Path, factor: int
) -> tuple[float, dict[str, Any]]:
    """The baseline's width floor with the lowest mean JS distance on validation OMs.

    The mixture fit, like our models, gets its free setting chosen on the validation split
    (the first ``baseline_tune_oms`` OMs), never on the evaluated one. Writes
    ``baseline_tuning.csv``; returns the floor and metrics describing the choice.
    """
    csr, n_photons = _sparse_oms(datamodule, "val", model.baseline_tune_oms, model.eval_batch_size)
    if len(n_photons) == 0:
        raise ValueError(
            "the baseline's width floor is chosen on validation OMs, but the val split is "
            "empty: give the data a val share (e.g. data.splits={val: 0.3, test: 0.7}) or fix "
            "model.baseline_sigma_min"
        )
    rows = []
    for sigma_min in model.baseline_sigma_grid:
        _, dist, _ = _fit_baseline(
            csr, len(n_photons), n_photons, model.baseline_components, float(sigma_min),
            model.num_bins, model.max_time, factor, np.random.default_rng(0),
        )  # fmt: skip
        rows.append((float(sigma_min), float(dist["js"].mean()), float(dist["js_coarse"].mean())))
    best = min(rows, key=lambda r: r[1])
    with atomic_path(out_dir / "baseline_tuning.csv") as tmp:
        tmp.write_text(
            "sigma_min_ns,val_js_mean,val_js_coarse_mean\n"
            + "".join(f"{a},{b:.6f},{c:.6f}\n" for a, b, c in rows)
        )
    log.info("baseline width floor %.3g ns chosen on %d validation OMs", best[0], len(n_photons))
    metrics = {"baseline/sigma_min_ns": best[0], "baseline/tuning_val_oms": len(n_photons)}
    metrics.update({f"baseline/tuning_val_js_mean_sigma{a:g}": b for a, b, _ in rows})
    return best[0], metrics


def evaluate_om2vec(
    model: Om2Vec,
    trainer: pl.Trainer | None,
    datamodule: PrometheusDataModule,
    out_dir: Path,
    split: str = "test",
) -> dict[str, Any]:
    """The work of :meth:`Om2Vec.evaluate`: metrics dict, ``per_om.parquet`` and plots."""
    from hepexp.plotting.om2vec import plot_examples, plot_js, plot_latents

    out_dir.mkdir(parents=True, exist_ok=True)
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    bf16 = trainer is not None and str(trainer.precision).startswith("bf16")
    model.to(device).eval()
    num_bins, width = model.num_bins, model.max_time / model.num_bins
    if (datamodule.num_bins, datamodule.max_time) != (num_bins, model.max_time):
        raise ValueError(
            f"the model was trained on {num_bins} bins up to {model.max_time} ns, but data "
            f"gives {datamodule.num_bins} bins up to {datamodule.max_time} ns"
        )
    factor = max(1, int(round(COARSE_NS / width)))
    rng = np.random.default_rng(0)
    limit = model.eval_max_oms or np.iinfo(np.int64).max
    cols: dict[str, list] = {k: [] for k in ("string_id", "sensor_id", "event_index", "n_photons")}
    dist: dict[str, list] = {k: [] for k in ("js", "ks", "js_coarse", "js_floor")}
    sparse = {"offsets": [np.zeros(1, np.int64)], "bin_index": [], "bin_count": []}
    mus, logvars = [], []
    t_encode = t_decode = 0.0
    seen = 0
    for batch in datamodule.loader(split, shuffle=False, batch_size=model.eval_batch_size):
        if seen >= limit:
            break
        n = len(batch["offsets"]) - 1
        if seen + n > limit:
            batch, n = _first_rows(batch, limit - seen), limit - seen
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _sync(device)
            t0 = time.perf_counter()
            mu, logvar = model.encode(batch)
            _sync(device)
            t1 = time.perf_counter()
            probs = model.decoder.probs(mu)
            _sync(device)
            t2 = time.perf_counter()
        t_encode, t_decode = t_encode + t1 - t0, t_decode + t2 - t1
        n_photons = batch["n_photons"].cpu().numpy()
        for k, v in _distances(
            densify_batch(batch, num_bins), probs, n_photons, factor, rng
        ).items():
            dist[k].append(v)
        for k in cols:
            cols[k].append(batch[k].cpu().numpy())
        mus.append(mu.float().cpu().numpy())
        logvars.append(logvar.float().cpu().numpy())
        off = batch["offsets"].cpu().numpy()
        sparse["offsets"].append(off[1:] + sparse["offsets"][-1][-1])
        sparse["bin_index"].append(batch["bin_index"].cpu().numpy())
        sparse["bin_count"].append(batch["bin_count"].cpu().numpy())
        seen += n
    if seen == 0:
        raise ValueError(f"the {split} split has no OMs to evaluate")
    per_om = {k: np.concatenate(v) for k, v in {**cols, **dist}.items()}
    mu = np.concatenate(mus)
    logvar = np.concatenate(logvars)
    csr = {k: np.concatenate(v) for k, v in sparse.items()}
    n_photons = per_om["n_photons"]

    metrics = _summary(per_om, n_photons)
    metrics["time/encode_ms_per_om"] = 1e3 * t_encode / seen
    metrics["time/decode_ms_per_om"] = 1e3 * t_decode / seen
    metrics["device"] = str(device) + (" bf16" if bf16 else "")
    fixed = model.n_fixed
    learned_mu, learned_logvar = mu[:, fixed:], logvar[:, fixed:]
    metrics["latent/dim"] = int(mu.shape[1])
    metrics["latent/fixed_dims"] = fixed
    # "active units": learned dimensions whose posterior mean varies across OMs
    metrics["latent/active_dims"] = int((learned_mu.var(axis=0) > 0.01).sum())
    metrics["latent/mean_posterior_std"] = float(np.exp(0.5 * learned_logvar).mean())
    kl = -0.5 * (1 + learned_logvar - learned_mu**2 - np.exp(learned_logvar)).sum(axis=1)
    metrics["latent/kl_per_om"] = float(kl.mean())

    # -- the per-OM fitted baseline on (the first baseline_max_oms of) the same OMs ------------
    n_base = min(seen, model.baseline_max_oms if model.baseline_max_oms is not None else seen)
    baseline = None
    if n_base > 0 and model.baseline_components > 0:
        sigma_min = model.baseline_sigma_min
        if sigma_min is None:
            sigma_min, tuning = tune_baseline_floor(model, datamodule, out_dir, factor)
            metrics.update(tuning)
        else:
            metrics["baseline/sigma_min_ns"] = float(sigma_min)
        log.info("fitting the %d-component baseline to %d OMs", model.baseline_components, n_base)
        baseline, base, t_fit = _fit_baseline(
            csr, n_base, n_photons, model.baseline_components, float(sigma_min),
            num_bins, model.max_time, factor, rng,
        )  # fmt: skip
        metrics.update(_summary(base, n_photons[:n_base], "baseline/"))
        same = {k: v[:n_base] for k, v in per_om.items()}
        model_same = _summary(same, n_photons[:n_base], "baseline/model_")
        metrics.update(
            {k: v for k, v in model_same.items() if "floor" not in k and "n_oms" not in k}
        )
        metrics["baseline/components"] = model.baseline_components
        metrics["time/baseline_fit_ms_per_om"] = 1e3 * t_fit / n_base
        metrics["time/fit_over_encode"] = metrics["time/baseline_fit_ms_per_om"] / max(
            metrics["time/encode_ms_per_om"], 1e-12
        )
        for k, v in base.items():
            per_om[f"baseline_{k}"] = np.concatenate([v, np.full(seen - n_base, np.nan)])

    # -- outputs --------------------------------------------------------------------------------
    table = pa.table({k: v for k, v in per_om.items()})
    with atomic_path(out_dir / "per_om.parquet") as tmp:
        pq.write_table(table, tmp)
    curves = {"om2vec": per_om["js"][:n_base] if baseline is not None else per_om["js"]}
    if baseline is not None:
        curves[f"AGMM K={model.baseline_components}"] = per_om["baseline_js"][:n_base]
        curves["sampling floor (om2vec)"] = per_om["js_floor"][:n_base]
    plot_js(n_photons[: len(curves["om2vec"])], curves, out_dir / "js.png")
    plot_latents(mu, n_photons, out_dir / "latents.png")
    examples = _examples(model, mu, csr, per_om, baseline, n_base, num_bins, device)
    plot_examples(examples, out_dir / "examples.png", bin_width=width)
    return metrics


def _dense(csr: dict[str, np.ndarray], start: int, stop: int, num_bins: int) -> np.ndarray:
    offsets = csr["offsets"][start : stop + 1]
    out = np.zeros((stop - start, num_bins))
    rows = np.repeat(np.arange(stop - start), np.diff(offsets))
    out[rows, csr["bin_index"][offsets[0] : offsets[-1]]] = csr["bin_count"][
        offsets[0] : offsets[-1]
    ]
    return out


def _examples(model, mu, csr, per_om, baseline, n_base, num_bins, device) -> list[dict]:
    """Up to ``model.n_examples`` OMs spread over the photon classes (among the baseline OMs)."""
    n_photons = (
        per_om["n_photons"][: max(n_base, 1)] if baseline is not None else per_om["n_photons"]
    )
    per_class = max(1, model.n_examples // len(PHOTON_CLASSES))
    rng = np.random.default_rng(1)
    chosen = []
    for lo, hi in PHOTON_CLASSES:
        idx = np.flatnonzero((n_photons >= lo) & (n_photons <= hi))
        chosen += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    if not chosen:
        return []
    z = torch.from_numpy(mu[chosen]).to(device)
    probs = model.decoder.probs(z).double().cpu().numpy()
    out = []
    for row, i in enumerate(chosen):
        ex = {
            "true": _dense(csr, i, i + 1, num_bins)[0],
            "model": probs[row],
            "n_photons": per_om["n_photons"][i],
            "js": per_om["js"][i],
            "baseline": None,
        }
        if baseline is not None and i < n_base:
            one = AsymmetricGaussianMixture(
                *(
                    a[i : i + 1]
                    for a in (
                        baseline.weights,
                        baseline.mu,
                        baseline.sigma_left,
                        baseline.sigma_right,
                    )
                )
            )
            ex["baseline"] = one.binned(num_bins, model.max_time)[0]
            ex["js_baseline"] = per_om["baseline_js"][i]
        out.append(ex)
    return out
