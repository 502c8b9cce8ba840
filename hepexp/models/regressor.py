"""model=regressor_flash: hits of an event -> per-hit track parameters -> HDBSCAN tracks.

The Transformer Regressor of "Translating Hits to Tracks": an encoder-only Transformer maps
every hit (x, y, z) to the parameters of the particle that left it (theta, sin phi, cos phi,
q); HDBSCAN then groups hits with similar predictions into tracks. Unlike the original, whose
flash path could only train one event per step, batches of events train together: padded with
a key mask (fused SDPA kernels) or packed into one sequence with a block-diagonal mask
(FlexAttention), see :mod:`hepexp.nn.attention`.

The HDBSCAN parameters are picked at the end of training by a scan of min_cluster_size x
min_samples on validation events (:meth:`TransformerRegressor.scan_clustering`); the choice is
a buffer of the model, so it is saved in the checkpoints and used by evaluate/convert, unless
``clustering.min_cluster_size`` / ``clustering.min_samples`` are set explicitly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hepexp.data.trackml.datamodule import EventHitsCollate, model_inputs
from hepexp.data.trackml.io import load_event
from hepexp.errors import ConfigError
from hepexp.metrics.stats import summarize
from hepexp.metrics.trackml import score_event
from hepexp.models.base import HEPModule
from hepexp.nn.attention import SetTransformer
from hepexp.reco.clustering import (
    best_parameters,
    cluster_events,
    options_of,
    scan_clustering,
    submission,
)
from hepexp.reco.evaluation import TrackingEvaluation
from hepexp.utils.io import atomic_path

if TYPE_CHECKING:
    from hepexp.data.base import HEPDataModule

log = logging.getLogger(__name__)

TARGETS = ("theta", "sin_phi", "cos_phi", "q")
DEFAULT_CLUSTERING = {"min_cluster_size": 5, "min_samples": 2, "q_scale": 1.0}
DEFAULT_SCAN = {
    "enabled": True,
    "min_cluster_size": [3, 4, 5, 6, 7],
    "min_samples": [1, 2, 3, 4],
    "q_scale": [0.25, 1.0],
    "max_events": 200,
}


class TransformerRegressor(HEPModule):
    """Encoder-only Transformer regressing per-hit track parameters, + HDBSCAN tracking.

    Args:
        num_features, num_targets: per-hit inputs (x, y, z) and targets (theta, sin phi,
            cos phi, q), from the data config.
        coord_scale: hit coordinates are divided by this (mm) before the model (data config);
            used by :meth:`convert` on raw event files.
        dim, layers, heads, ffn, dropout, attn_dropout: Transformer sizes (post-norm, ReLU).
        attention: ``layout`` (``padded`` | ``packed``), ``packed_kernel`` (``auto``: flex on
            CUDA, loop on CPU | ``flex`` | ``loop`` | ``dense``), ``compile_flex``
            (``auto``: on CUDA).
        direction_features: also feed the hit's transverse radius r, azimuthal direction
            (x / r, y / r) and polar direction (z / rho, r / rho) seen from the origin to the
            embedding (the original takes x, y, z only): hits of one track share directions,
            so attention finds them with a dot product.
        hit_frame: the network predicts the particle direction relative to the hit's own
            direction seen from the origin: theta = theta_hit + d_theta and (sin phi, cos phi) =
            (sin phi_hit, cos phi_hit) rotated by (s, 1 + c); the loss stays on the usual
            targets. High-pT tracks then need small corrections only (the original predicts
            absolute values).
        geometric_attention: every attention head also scores pairs of hits by the similarity
            of their directions from the origin (azimuthal and polar unit vectors), with a
            learnable gain per head (see :class:`hepexp.nn.attention.SelfAttention`): hits
            of one track attend to each other from the first step on. ``"azimuth"``: the
            azimuthal unit vectors only (the polar direction from the origin differs along a
            track from a displaced vertex).
        ffn_gate: gated (ReGLU) feed-forward blocks instead of ReLU ones.
        loss_on_noise: also regress the all-zero target of noise hits (default: only hits of
            particles count in the MSE).
        clustering: HDBSCAN settings: ``min_cluster_size``/``min_samples`` (null: the values
            chosen by the scan, stored in the checkpoint; 5 / 2 before any scan), ``n_jobs``
            (worker processes), ``q_scale`` (factor on the predicted q before clustering; null:
            scanned, 1 before any scan) and any :class:`hdbscan.HDBSCAN` option.
        scan: ``enabled``, the ``min_cluster_size``, ``min_samples`` and ``q_scale`` grids,
            ``max_events`` (validation events used).
        augment: detector symmetries applied to training batches: ``rotate_phi`` (a random
            rotation about the beam axis per event; sin/cos phi targets rotate with it) and
            ``flip_z`` (z -> -z for a random half of the events; theta -> pi - theta).
        val_score_events: after every validation epoch, the TrackML score of this many
            validation events is logged as ``val/trackml_score`` (0: off).
        eval_batch_size: events per forward pass in evaluate/convert.
        pt_min: the pT threshold (GeV) of the "pT >= x" efficiencies.
    """

    view = "event_hits"

    def __init__(
        self,
        num_features: int = 3,
        num_targets: int = 4,
        coord_scale: float = 1000.0,
        dim: int = 64,
        layers: int = 4,
        heads: int = 4,
        ffn: int = 128,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        attention: Mapping[str, Any] | None = None,
        direction_features: bool = True,
        hit_frame: bool = True,
        geometric_attention: bool | str = True,
        ffn_gate: bool = True,
        loss_on_noise: bool = False,
        clustering: Mapping[str, Any] | None = None,
        scan: Mapping[str, Any] | None = None,
        augment: Mapping[str, bool] | None = None,
        val_score_events: int = 0,
        eval_batch_size: int = 64,
        pt_min: float = 0.9,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if num_targets != len(TARGETS):
            raise ConfigError(
                f"regressor_flash regresses {len(TARGETS)} targets {TARGETS}, "
                f"but the data provides num_targets={num_targets}"
            )
        if geometric_attention not in (False, True, "azimuth"):
            raise ConfigError(
                f"geometric_attention must be true, false or 'azimuth', got {geometric_attention!r}"
            )
        attention = {"layout": "padded", "packed_kernel": "auto", "compile_flex": "auto"} | dict(
            attention or {}
        )
        self.direction_features = direction_features
        self.hit_frame = hit_frame
        self.net = SetTransformer(
            num_features + (5 if direction_features else 0),
            num_targets,
            dim=dim,
            layers=layers,
            heads=heads,
            ffn=ffn,
            dropout=dropout,
            attn_dropout=attn_dropout,
            layout=attention["layout"],
            packed_kernel=attention["packed_kernel"],
            compile_flex=attention["compile_flex"],
            geometry_dims={False: 0, True: 4, "azimuth": 2}[geometric_attention],
            ffn_gate=ffn_gate,
        )
        self.geometric_attention = geometric_attention
        self.coord_scale = float(coord_scale)
        self.loss_on_noise = loss_on_noise
        self.clustering = {
            "min_cluster_size": None,
            "min_samples": None,
            "q_scale": None,
            "n_jobs": 1,
        } | dict(clustering or {})
        self.scan = DEFAULT_SCAN | dict(scan or {})
        self.augment = {"rotate_phi": False, "flip_z": False} | dict(augment or {})
        unknown = set(self.augment) - {"rotate_phi", "flip_z"}
        if unknown:
            raise ConfigError(f"augment: unknown keys {sorted(unknown)}; use rotate_phi, flip_z")
        self.val_score_events = int(val_score_events)
        self.eval_batch_size = eval_batch_size
        self.pt_min = pt_min
        # (min_cluster_size, min_samples, q_scale) chosen by the validation scan; 0 = not yet
        self.register_buffer("cluster_params", torch.zeros(3, dtype=torch.float64))
        self._model_seconds = 0.0
        self._model_events = 0
        self._val_truths: list[tuple[int, pd.DataFrame]] | None = None

    # -- model ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, 3) scaled hit positions (+ (B, N) mask) -> (B, N, 4) predictions."""
        r = torch.linalg.vector_norm(x[..., :2], dim=-1, keepdim=True)
        direction = x[..., :2] / r.clamp_min(1e-9)  # (cos phi_hit, sin phi_hit)
        polar = torch.cat([x[..., 2:], r], dim=-1)  # (cos theta_hit, sin theta_hit)
        polar = polar / torch.linalg.vector_norm(polar, dim=-1, keepdim=True).clamp_min(1e-9)
        inputs = torch.cat([x, r, direction, polar], dim=-1) if self.direction_features else x
        geometry = None
        if self.geometric_attention == "azimuth":
            geometry = direction
        elif self.geometric_attention:
            geometry = torch.cat([direction, polar], dim=-1)
        out = self.net(inputs, mask, geometry=geometry)
        if not self.hit_frame:
            return out
        theta = torch.atan2(r[..., 0], x[..., 2]) + out[..., 0]
        cos_h, sin_h = direction[..., 0], direction[..., 1]
        s, c = out[..., 1], 1.0 + out[..., 2]
        sin_phi = sin_h * c + cos_h * s
        cos_phi = cos_h * c - sin_h * s
        out = torch.stack([theta, sin_phi, cos_phi, out[..., 3]], dim=-1)
        if mask is not None:
            out = out * mask[..., None]
        return out

    def cluster_settings(self) -> dict[str, Any]:
        """Clustering parameters in use: explicit config values, else the scanned ones (stored
        in the ``cluster_params`` buffer), else min_cluster_size 5, min_samples 2, q_scale 1."""
        stored = self.cluster_params.tolist()
        scanned = stored[0] > 0
        chosen: dict[str, Any] = {}
        for i, key in enumerate(("min_cluster_size", "min_samples", "q_scale")):
            value = self.clustering.get(key)
            if value is None:
                value = stored[i] if scanned else DEFAULT_CLUSTERING[key]
            chosen[key] = float(value) if key == "q_scale" else int(value)
        return chosen

    def cluster_features(self, pred: np.ndarray, q_scale: float) -> np.ndarray:
        """The clustering features: predictions with q multiplied by ``q_scale`` (a q that is
        not yet well learned is noise on a scale of 1 that would dominate the distances)."""
        return pred * np.array([1.0, 1.0, 1.0, q_scale], dtype=pred.dtype)

    def cluster(
        self, preds: Sequence[np.ndarray], **override: Any
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """HDBSCAN labels per event from per-hit predictions; also CPU seconds per event."""
        params = self.cluster_settings() | override
        q_scale = params.pop("q_scale")
        return cluster_events(
            [self.cluster_features(p, q_scale) for p in preds],
            n_jobs=int(self.clustering.get("n_jobs", 1)),
            **params,
            **options_of(self.clustering),
        )

    # -- training ------------------------------------------------------------------------------
    def _loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pred = self(batch["x"], batch["mask"])
        sel = batch["mask"]
        if not self.loss_on_noise and "particle_id" in batch:
            sel = sel & (batch["particle_id"] != 0)
        return F.mse_loss(pred[sel].float(), batch["y"][sel].float())

    def augmented(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` with random detector symmetries applied (see ``augment``)."""
        batch = dict(batch)
        x, y = batch["x"], batch["y"]
        b = len(x)
        particle = batch["mask"]
        if "particle_id" in batch:
            particle = particle & (batch["particle_id"] != 0)
        if self.augment["rotate_phi"]:
            angle = torch.rand(b, 1, device=x.device) * (2 * torch.pi)
            c, s = torch.cos(angle), torch.sin(angle)
            x = torch.stack(
                [c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1], x[..., 2]], -1
            )
            sin_phi = y[..., 1] * c + y[..., 2] * s
            cos_phi = y[..., 2] * c - y[..., 1] * s
            y = torch.stack([y[..., 0], sin_phi, cos_phi, y[..., 3]], -1)
        if self.augment["flip_z"]:
            flip = torch.rand(b, 1, device=x.device) < 0.5
            x = torch.cat([x[..., :2], torch.where(flip, -x[..., 2], x[..., 2])[..., None]], -1)
            theta = torch.where(flip & particle, torch.pi - y[..., 0], y[..., 0])
            y = torch.cat([theta[..., None], y[..., 1:]], -1)
        batch["x"], batch["y"] = x, y
        return batch

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.augment["rotate_phi"] or self.augment["flip_z"]:
            batch = self.augmented(batch)
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["x"]))
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["x"]), sync_dist=True)

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("test/loss", loss, batch_size=len(batch["x"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.val_score_events <= 0 or self.trainer.sanity_checking:
            return
        # every rank scores the same first events, so the value agrees across DDP ranks
        events = self.predict_events(
            self.datamodule, "val", max_events=self.val_score_events, timed=False
        )
        if self._val_truths is None:
            self._val_truths = {
                e["event_id"]: self.datamodule.event("val", e["event_id"]).truth for e in events
            }
        labels, _ = self.cluster([e["pred"] for e in events])
        scores = [
            score_event(
                self._val_truths[e["event_id"]],
                pd.DataFrame({"hit_id": e["hit_id"], "track_id": lab}),
            )
            for e, lab in zip(events, labels, strict=True)
        ]
        self.log("val/trackml_score", float(np.nanmean(scores)), prog_bar=True, sync_dist=False)

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> list[dict]:
        return self._predict_batch(batch, timed=True)

    def _predict_batch(self, batch: Mapping[str, torch.Tensor], timed: bool) -> list[dict]:
        x, mask = batch["x"].to(self.device), batch["mask"].to(self.device)
        if timed and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        pred = self(x, mask)
        if timed and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if timed:
            self._model_seconds += time.perf_counter() - start
            self._model_events += len(x)
        pred = pred.float().cpu().numpy()
        mask = batch["mask"].cpu().numpy()
        out = []
        for i in range(len(x)):
            m = mask[i]
            event = {
                "event_id": int(batch["event_id"][i]),
                "hit_id": batch["hit_id"][i].cpu().numpy()[m],
                "pred": pred[i][m],
            }
            for key in ("y", "particle_id"):
                if key in batch:
                    event[key] = batch[key][i].cpu().numpy()[m]
            out.append(event)
        return out

    @torch.no_grad()
    def predict_events(
        self,
        datamodule: HEPDataModule,
        split: str,
        max_events: int | None = None,
        timed: bool = False,
    ) -> list[dict]:
        """Per-event predictions (event_id, hit_id, pred, y, particle_id) of ``split``, in
        dataset order, running this module where it is (its device and dtype)."""
        was_training = self.training
        self.eval()
        events: list[dict] = []
        try:
            loader = datamodule.loader(split, shuffle=False, batch_size=self.eval_batch_size)
            for batch in loader:
                events += self._predict_batch(batch, timed)
                if max_events is not None and len(events) >= max_events:
                    break
        finally:
            self.train(was_training)
        return events[:max_events] if max_events is not None else events

    @torch.no_grad()
    def hit_parameters(self, hits: pd.DataFrame) -> np.ndarray:
        """(n, 4) float32 predicted theta, sin phi, cos phi, q for the rows of one event's
        ``hits`` (hit_id, x, y, z in mm, volume_id, layer_id), batched by the data module's
        collation (coordinates / ``coord_scale``) as in training."""
        record = model_inputs("event_hits", hits) | {"event_id": 0}
        batch = EventHitsCollate(self.coord_scale)([record])
        was_training = self.training
        self.eval()
        try:
            return self._predict_batch(batch, timed=False)[0]["pred"]
        finally:
            self.train(was_training)

    def predict(self, hits: pd.DataFrame, **clustering: Any) -> pd.DataFrame:
        """The tracks of one event's hits, in memory (what ``convert`` writes, for one event).

        ``hits``: a DataFrame with hit_id, x, y, z (mm), volume_id, layer_id (as
        :func:`~hepexp.data.trackml.load_event` reads it); every row is used, noise included.
        ``clustering``: ``min_cluster_size``, ``min_samples``, ``q_scale`` instead of the
        stored HDBSCAN parameters (:meth:`cluster_settings`).

        Returns one row per hit, in the order of ``hits``: hit_id; theta (rad), sin_phi,
        cos_phi, q: the predicted momentum direction and charge of the hit's particle;
        track_id >= 0: the HDBSCAN cluster, a hit in no cluster being a track of its own
        (ready for :func:`~hepexp.metrics.score_event`).
        """
        unknown = set(clustering) - {"min_cluster_size", "min_samples", "q_scale"}
        if unknown:
            raise TypeError(f"regressor_flash predict: unknown options {sorted(unknown)}")
        pred = self.hit_parameters(hits)
        labels, _ = self.cluster([pred], **clustering)
        table = submission(hits["hit_id"].to_numpy(np.int64), labels[0])
        for i, name in enumerate(TARGETS):
            table.insert(1 + i, name, pred[:, i])
        return table

    # -- clustering scan -------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        trainer = self.trainer
        if not self.scan.get("enabled", True) or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt is not None else ""
        current = None
        if best and Path(best).exists():
            current = {k: v.detach().clone() for k, v in self.state_dict().items()}
            state = torch.load(best, map_location=self.device, weights_only=True)["state_dict"]
            self.load_state_dict(state)
        try:
            result = self.scan_clustering(self.datamodule, Path(trainer.default_root_dir))
        finally:
            if current is not None:
                self.load_state_dict(current)
        self.cluster_params.copy_(self._params_tensor(result))
        saved = {
            p
            for cb in trainer.checkpoint_callbacks
            for p in (cb.best_model_path, cb.last_model_path)
        }
        for path in saved - {""}:  # best.ckpt and last.ckpt
            store_cluster_params(path, self.cluster_params)

    @staticmethod
    def _params_tensor(best: Mapping[str, Any]) -> torch.Tensor:
        keys = ("min_cluster_size", "min_samples", "q_scale")
        return torch.tensor([float(best[k]) for k in keys], dtype=torch.float64)

    def scan_clustering(self, datamodule: HEPDataModule, out_dir: Path) -> dict:
        """Scan min_cluster_size x min_samples (x the weight of q) on validation events.

        Writes ``clustering_scan.csv`` (every grid point) and the heatmap
        ``clustering_scan.png`` (at the best q weight) to ``out_dir``, stores the best point in
        the ``cluster_params`` buffer and returns it with its mean TrackML score.
        """
        from hepexp.plotting.trackml import plot_scan_heatmap

        n = int(self.scan.get("max_events") or 10**9)
        events = self.predict_events(datamodule, "val", max_events=n)
        truths = [datamodule.event("val", e["event_id"]).truth for e in events]
        start = time.perf_counter()
        tables = []
        for q_scale in self.scan.get("q_scale") or [1.0]:
            table = scan_clustering(
                [self.cluster_features(e["pred"], q_scale) for e in events],
                [e["hit_id"] for e in events],
                truths,
                self.scan["min_cluster_size"],
                self.scan["min_samples"],
                n_jobs=int(self.clustering.get("n_jobs", 1)),
                **options_of(self.clustering),
            )
            table.insert(2, "q_scale", float(q_scale))
            tables.append(table)
        table = pd.concat(tables, ignore_index=True)
        best = best_parameters(table)
        best["q_scale"] = float(table["q_scale"].iloc[int(np.nanargmax(table["score"]))])
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "clustering_scan.csv") as tmp:
            table.to_csv(tmp, index=False)
        plot_scan_heatmap(
            table[table["q_scale"] == best["q_scale"]],
            out_dir / "clustering_scan.png",
            f"HDBSCAN scan on {len(events)} validation events (q weight {best['q_scale']:g})",
        )
        self.cluster_params.copy_(self._params_tensor(best))
        log.info(
            "clustering scan (%d val events, %.1f s): min_cluster_size=%d min_samples=%d "
            "q_scale=%g, TrackML score %.4f",
            len(events),
            time.perf_counter() - start,
            best["min_cluster_size"],
            best["min_samples"],
            best["q_scale"],
            best["score"],
        )
        return best | {"n_events": len(events)}

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self,
        trainer: pl.Trainer,
        datamodule: HEPDataModule,
        out_dir: Path,
        split: str = "test",
    ) -> dict:
        """TrackML score, efficiencies, residuals, timing and plots on ``split``'s events."""
        from hepexp.plotting.trackml import (
            plot_efficiencies,
            plot_event_display,
            plot_residuals,
        )

        out_dir = Path(out_dir)
        self._model_seconds, self._model_events = 0.0, 0
        loader = datamodule.loader(split, shuffle=False, batch_size=self.eval_batch_size)
        batches = trainer.predict(self, dataloaders=loader)
        events = [e for batch in batches for e in batch]
        model_ms = 1e3 * self._model_seconds / max(self._model_events, 1)

        settings = self.cluster_settings()
        start = time.perf_counter()
        labels, cpu_seconds = self.cluster([e["pred"] for e in events])
        cluster_wall = time.perf_counter() - start

        tracking = TrackingEvaluation(partial(datamodule.event, split), (0.0, self.pt_min))
        for event, event_labels in zip(events, labels, strict=True):
            tracking.add(event["event_id"], event["hit_id"], event_labels)
        summary = tracking.summary()
        metrics: dict[str, Any] = {
            "n_events": len(events),
            "n_hits": int(sum(len(e["hit_id"]) for e in events)),
            "trackml_score": summary["trackml_score"],
            "trackml_score_std": summary["trackml_score_std"],
            "min_cluster_size": settings["min_cluster_size"],
            "min_samples": settings["min_samples"],
            "q_scale": settings["q_scale"],
            "time_model_ms_per_event": model_ms,
            "time_clustering_ms_per_event": 1e3 * float(np.mean(cpu_seconds)),
            "time_clustering_wall_ms_per_event": 1e3 * cluster_wall / max(len(events), 1),
            "clustering_n_jobs": int(self.clustering.get("n_jobs", 1)),
            "device": str(self.device),
        }
        for name, pt_min in (("", 0.0), (f"_pt{self.pt_min:g}", self.pt_min)):
            for key, value in summary[pt_min].items():
                metrics[f"{key}{name}"] = value
        residuals, sigmas = self._residuals(events)
        for name, values in residuals.items():  # the published sigma is a std; sigma68 beside it
            spread = summarize(values)
            for stat in ("mean", "rms", "std", "sigma68"):
                metrics[f"residual_{stat}_{name}"] = spread[stat]

        plot_efficiencies(tracking.particles(), out_dir / "efficiency.png")
        if residuals:
            plot_residuals(residuals, sigmas, out_dir / "residuals.png")
        if events:
            first = events[0]
            frames = datamodule.event(split, first["event_id"])
            xyz = frames.hits[["x", "y", "z"]].to_numpy()
            track = pd.Series(labels[0], index=first["hit_id"]).reindex(frames.hits["hit_id"])
            pid = frames.truth.set_index("hit_id")["particle_id"].reindex(frames.hits["hit_id"])
            plot_event_display(
                xyz,
                np.nan_to_num(track.to_numpy(), nan=-1).astype(np.int64),
                np.nan_to_num(pid.to_numpy(), nan=0).astype(np.int64),
                out_dir / "event_display.png",
                f"event {first['event_id']}: TrackML score {tracking.scores()[0]:.3f}",
            )
        log.info(
            "TrackML score %.4f +- %.4f (std over %d events; standard error of the mean %.4f)",
            metrics["trackml_score"],
            metrics["trackml_score_std"],
            len(events),
            metrics["trackml_score_std"] / max(len(events), 1) ** 0.5,
        )
        return metrics

    def _residuals(self, events: list[dict]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        if not events or "y" not in events[0]:
            return {}, {}
        pred = np.concatenate([e["pred"] for e in events])
        true = np.concatenate([e["y"] for e in events])
        if "particle_id" in events[0]:
            real = np.concatenate([e["particle_id"] for e in events]) != 0
            pred, true = pred[real], true[real]
        res = {name: pred[:, i] - true[:, i] for i, name in enumerate(TARGETS)}
        return res, {k: float(np.std(v)) if v.size else float("nan") for k, v in res.items()}

    # -- conversion ----------------------------------------------------------------------------
    @torch.no_grad()
    def convert(
        self,
        datamodule: HEPDataModule,
        input_path: Path,
        output_path: Path,
        mode: str | None = None,
        **options: Any,
    ) -> dict:
        """A directory of TrackML events -> per-hit predictions and a TrackML submission.

        Writes ``output_path/predictions.csv`` (event_id, hit_id, theta, sin_phi, cos_phi, q)
        and ``output_path/submission.csv`` (event_id, hit_id, track_id; hits in no cluster get
        their own track id). Only ``*-hits.csv[.gz]`` are needed; where truth files exist too,
        the TrackML score of each event is returned. ``mode``: ``tracks`` (default).
        Options: ``nevents``, ``min_cluster_size``, ``min_samples``, ``q_scale`` (override the
        stored clustering).
        """
        mode = mode or "tracks"
        if mode != "tracks":
            raise ConfigError(f"regressor_flash convert mode must be 'tracks', got '{mode}'")
        unknown = set(options) - {"nevents", "min_cluster_size", "min_samples", "q_scale"}
        if unknown:
            raise TypeError(f"regressor_flash convert: unknown options {sorted(unknown)}")
        if datamodule.coord_scale != self.coord_scale:
            raise ConfigError(
                f"data.coord_scale {datamodule.coord_scale} differs from the {self.coord_scale} "
                "this model was trained with"
            )
        output_path = Path(output_path)
        raw = datamodule.raw_events(input_path)[: options.get("nevents")]
        ids = [event_id for event_id, _ in raw]
        self.eval()
        seconds = dict.fromkeys(("read", "model", "clustering", "write"), 0.0)
        preds, hit_ids = [], []
        for event_id, prefix in tqdm(
            raw, desc="regressor_flash convert", unit="event", leave=False
        ):
            start = time.perf_counter()
            hits, cells = datamodule.read_raw_event(prefix)
            record = datamodule.model_inputs(hits, cells) | {"event_id": event_id}
            hit_ids.append(record["hits"]["hit_id"])
            seconds["read"] += time.perf_counter() - start
            start = time.perf_counter()
            batch = datamodule.collate_fn()([record])
            preds.append(self._predict_batch(batch, timed=False)[0]["pred"])
            seconds["model"] += time.perf_counter() - start
        override = {
            k: options[k] for k in ("min_cluster_size", "min_samples", "q_scale") if k in options
        }
        start = time.perf_counter()
        labels, _ = self.cluster(preds, **override)
        seconds["clustering"] = time.perf_counter() - start
        start = time.perf_counter()
        subs = [submission(h, lab, e) for h, lab, e in zip(hit_ids, labels, ids, strict=True)]
        pred_frame = pd.concat(
            [
                pd.DataFrame(
                    {
                        "event_id": np.full(len(h), e, dtype=np.int64),
                        "hit_id": h,
                        **{name: p[:, i] for i, name in enumerate(TARGETS)},
                    }
                )
                for e, h, p in zip(ids, hit_ids, preds, strict=True)
            ],
            ignore_index=True,
        )
        output_path.mkdir(parents=True, exist_ok=True)
        for name, frame in (("predictions.csv", pred_frame), ("submission.csv", pd.concat(subs))):
            with atomic_path(output_path / name) as tmp:
                frame.to_csv(tmp, index=False)
        seconds["write"] = time.perf_counter() - start
        total = sum(seconds.values())
        result: dict[str, Any] = {
            "n_events": len(ids),
            "n_hits": len(pred_frame),
            "output": str(output_path),
            "device": str(self.device),
            "seconds": seconds,
            "events_per_s": len(ids) / total if total > 0 else None,
            "slowest_stage": max(seconds, key=seconds.get),
            **self.cluster_settings(),
            **override,
        }
        scores = {}
        for (event_id, prefix), sub in zip(raw, subs, strict=True):
            try:
                (truth,) = load_event(prefix, ("truth",))
            except FileNotFoundError:
                continue
            scores[int(event_id)] = score_event(truth, sub)
        if scores:
            result["trackml_score"] = float(np.nanmean(list(scores.values())))
            result["trackml_score_per_event"] = scores
        return result


def store_cluster_params(path: str | Path, params: torch.Tensor) -> None:
    """Write the chosen clustering parameters into an existing checkpoint file, atomically."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["cluster_params"] = params.detach().cpu().clone()
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
