"""model=vqvae_cond and model=vqvae_uncond: VQ-VAE tokenizers of TrackML hits.

Both turn hit positions (x, y, z / ``coord_scale``) into integer tokens from a codebook (see
:mod:`hepexp.nn.quantizer`) and back into positions.

- :class:`HitVQVAE` (``vqvae_uncond``, view ``hits``): per-hit MLP encoder and decoder; a hit
  always maps to the same token, whatever track it is on.
- :class:`TrackVQVAE` (``vqvae_cond``, view ``track_hits``): a Transformer encoder over the hits
  of a track, the quantizer on each hit, a Transformer decoder; a hit's token depends on the
  whole track. Padding is masked in attention and never quantized.

Shared here: training with reconstruction + commitment loss, codebook utilisation/perplexity
each epoch, k-means initialisation of the codebook from encoder outputs at the start of
training, ``evaluate`` (errors in mm, per sub-detector and radius, codebook use, plots) and
``convert`` (events -> tokens -> positions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hepexp.data.trackml import views
from hepexp.data.trackml.io import event_prefix, list_events, load_event
from hepexp.data.trackml.subevents import SubEvent, select
from hepexp.errors import ConfigError, DataError
from hepexp.metrics import vqvae as vqm
from hepexp.models.base import HEPModule
from hepexp.nn.blocks import mlp
from hepexp.nn.quantizer import CodeUsage, VectorQuantizer, usage_stats
from hepexp.utils.io import atomic_path, write_json

if TYPE_CHECKING:
    from hepexp.data.trackml.datamodule import TrackMLDataModule

TOKEN_COLUMNS = ("event_id", "hit_id", "particle_id", "token")
RECON_LOSSES = ("mse", "distance", "huber")


def hit_features(x: torch.Tensor, cylindrical: bool) -> torch.Tensor:
    """Model inputs of scaled positions (..., 3): x, y, z [, r, x/r, y/r] (r transverse)."""
    if not cylindrical:
        return x
    r = torch.hypot(x[..., 0], x[..., 1])
    inv = 1.0 / r.clamp_min(1e-6)
    return torch.cat(
        [x, r[..., None], (x[..., 0] * inv)[..., None], (x[..., 1] * inv)[..., None]], -1
    )


class VQVAE(HEPModule):
    """What both tokenizers share; subclasses define the networks and the batch layout.

    Args:
        quantizer: arguments of :class:`~hepexp.nn.quantizer.VectorQuantizer`.
        coord_scale: mm per model unit (``${data.coord_scale}``), to report errors in mm.
        recon_loss: ``mse`` (squared error of scaled positions, the original), ``distance``
            (Euclidean distance) or ``huber`` (smooth L1 per coordinate, ``huber_delta``).
        cylindrical_features: encoder inputs x, y, z plus r, x/r, y/r (r transverse).
        polar_output: the decoder predicts r, a 2-vector giving phi, and z instead of x, y, z.
        kmeans_samples, kmeans_iters: with ``quantizer.kmeans_init``, the codebook starts as
            k-means centres of this many encoder outputs of training data.
        init_from: a checkpoint of the same model whose weights (codebook included) start
            training, with a fresh optimiser and schedule (fine-tuning); null: none. Only
            training reads it; ``ckpt_path`` (resume) takes precedence.
    """

    def __init__(
        self,
        quantizer: Mapping[str, Any] | None = None,
        coord_scale: float = 200.0,
        recon_loss: str = "mse",
        huber_delta: float = 0.05,
        cylindrical_features: bool = False,
        polar_output: bool = False,
        kmeans_samples: int = 65536,
        kmeans_iters: int = 20,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if recon_loss not in RECON_LOSSES:
            raise ConfigError(f"recon_loss must be one of {RECON_LOSSES}, got '{recon_loss}'")
        self.quantizer = VectorQuantizer(**(quantizer or {}))
        self.coord_scale = float(coord_scale)
        self.recon_loss = recon_loss
        self.huber_delta = huber_delta
        self.cylindrical_features = cylindrical_features
        self.n_features = 6 if cylindrical_features else 3
        self.polar_output = polar_output
        self.n_outputs = 4 if polar_output else 3
        self.kmeans_samples = kmeans_samples
        self.kmeans_iters = kmeans_iters
        self.usage = {s: CodeUsage(self.quantizer.num_codes) for s in ("train", "val")}

    def positions_of(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder outputs (..., 3 or 4) -> scaled positions (..., 3). With ``polar_output``
        the decoder gives r, a 2-vector whose direction is phi, and z."""
        if not self.polar_output:
            return out
        direction = out[..., 1:3] / out[..., 1:3].norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return torch.cat([out[..., :1] * direction, out[..., 3:]], -1)

    # -- to implement ----------------------------------------------------------------------------
    def hits_forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Real hits of ``batch``: ``true``/``reco`` (N, 3) scaled, ``tokens``, ``z`` (N, D),
        ``commit`` (loss), ``volume_id``/``hit_id``/``particle_id`` (N,)."""
        raise NotImplementedError

    def latents(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Encoder outputs (N, D) of the real hits of ``batch``."""
        raise NotImplementedError

    def encode_event(
        self, event: SubEvent, datamodule: TrackMLDataModule, batch_size: int
    ) -> pd.DataFrame:
        """hit_id, particle_id, token of the hits of a selected event that get tokens."""
        raise NotImplementedError

    def decode_table(self, table: pd.DataFrame, source: Path, batch_size: int) -> np.ndarray:
        """Positions (N, 3) in mm of the tokens of ``table`` (rows as in the file)."""
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------------------
    def _recon(self, true: torch.Tensor, reco: torch.Tensor) -> torch.Tensor:
        if self.recon_loss == "mse":
            return F.mse_loss(reco, true)
        if self.recon_loss == "distance":
            return ((reco - true).pow(2).sum(-1) + 1e-8).sqrt().mean()
        return F.smooth_l1_loss(reco, true, beta=self.huber_delta)

    def _step(self, batch: Mapping[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self.hits_forward(batch)
        recon = self._recon(out["true"].float(), out["reco"].float())
        loss = recon + out["commit"]
        n = len(out["true"])
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/recon", recon, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/commit", out["commit"], batch_size=n, sync_dist=sync)
        if stage != "train":
            err = (out["reco"].float() - out["true"].float()).norm(dim=-1) * self.coord_scale
            self.log(
                f"{stage}/within_25mm", (err < 25.0).float().mean(), batch_size=n, sync_dist=True
            )
            self.log(f"{stage}/mean_error_mm", err.mean(), batch_size=n, sync_dist=True)
        if stage in self.usage:
            self.usage[stage].update(out["tokens"])
        return loss

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_usage(self, stage: str) -> None:
        stats = self.usage[stage].compute()
        self.usage[stage].reset()
        if stats["tokens"]:
            self.log(f"{stage}/utilisation", stats["utilisation"])
            self.log(f"{stage}/perplexity", stats["perplexity"])

    def on_train_epoch_start(self) -> None:
        self.usage["train"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_usage("train")
        self.log("train/restarts", float(self.quantizer.pop_restarts()))

    def on_validation_epoch_start(self) -> None:
        self.usage["val"].reset()

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_usage("val")

    def on_train_start(self) -> None:
        if self.quantizer.needs_init:
            self.init_codebook(self._kmeans_batches())

    def _kmeans_batches(self) -> Iterable[Mapping[str, torch.Tensor]]:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            return datamodule.loader("train", shuffle=True)
        return self.trainer.train_dataloader

    @torch.no_grad()
    def init_codebook(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> int:
        """k-means initialisation of the codebook from encoder outputs of ``batches``
        (up to ``kmeans_samples`` hits); returns the number of samples used."""
        chunks, n = [], 0
        for batch in batches:
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            z = self.latents(batch).float()
            chunks.append(z)
            n += len(z)
            if n >= self.kmeans_samples:
                break
        if not chunks:
            raise DataError("training data", None, "no batches to initialise the codebook from")
        samples = torch.cat(chunks)[: self.kmeans_samples]
        self.quantizer.init_codebook(samples, self.kmeans_iters)
        return len(samples)

    # -- inference ---------------------------------------------------------------------------------
    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict:
        out = self.hits_forward(batch)
        keep = ("volume_id", "hit_id", "particle_id", "track")
        result = {k: out[k].cpu().numpy() for k in keep if k in out}
        result["true"] = out["true"].float().cpu().numpy() * self.coord_scale
        result["reco"] = out["reco"].float().cpu().numpy() * self.coord_scale
        result["tokens"] = out["tokens"].cpu().numpy()
        return result

    def evaluate(
        self,
        trainer: pl.Trainer,
        datamodule: TrackMLDataModule,
        out_dir: Path,
        split: str = "test",
    ) -> dict:
        """Reconstruction errors (mm) overall, per sub-detector and per radius; codebook use.

        Writes ``error_cdf.csv`` (for comparing runs: ``python -m hepexp.plotting.vqvae``),
        ``per_volume.csv``, ``per_radius.csv``, ``token_counts.npy`` and plots.
        """
        from hepexp.plotting import vqvae as plots

        out_dir = Path(out_dir)
        loader = datamodule.loader(split, shuffle=False)
        outputs = trainer.predict(self, dataloaders=loader)
        cat = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        errors = vqm.hit_errors(cat["true"], cat["reco"])
        radius = np.hypot(cat["true"][:, 0], cat["true"][:, 1])
        counts = np.bincount(cat["tokens"], minlength=self.quantizer.num_codes)

        metrics = vqm.error_summary(errors)
        metrics.update(usage_stats(torch.from_numpy(counts)))
        metrics["codebook_size"] = self.quantizer.num_codes
        if "track" in cat:
            metrics["n_tracks"] = int(sum(len(np.unique(o["track"])) for o in outputs))
        volumes = vqm.per_group(errors, cat["volume_id"], vqm.VOLUME_NAMES)
        for name, stats in volumes.items():
            for key in ("within_25mm", "mean_error_mm", "median_error_mm", "n_hits"):
                metrics[f"{name}/{key}"] = stats[key]
        by_radius = vqm.per_radius(errors, radius)

        cdf = vqm.error_cdf(errors)
        _write_csv(cdf, out_dir / "error_cdf.csv")
        _write_csv(pd.DataFrame.from_dict(volumes, orient="index"), out_dir / "per_volume.csv")
        _write_csv(by_radius, out_dir / "per_radius.csv")
        with atomic_path(out_dir / "token_counts.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, counts)
        label = f"{type(self).__name__} ({split})"
        plots.plot_error_cdfs({label: cdf}, out_dir / "error_cdf.png")
        plots.plot_token_frequency(counts, out_dir / "token_frequency.png")
        plots.plot_error_vs_radius(by_radius, out_dir / "error_vs_radius.png")
        if "track" in cat:
            first = cat["track"] < 8
            tracks = [cat["track"][first] == t for t in np.unique(cat["track"][first])]
            plots.plot_examples(
                [cat["true"][first][s] for s in tracks],
                [cat["reco"][first][s] for s in tracks],
                out_dir / "example_tracks.png",
            )
        write_json(out_dir / "per_volume.json", volumes)
        return metrics

    @torch.no_grad()
    def predict(
        self,
        data: pd.DataFrame,
        particles: pd.DataFrame | None = None,
        truth: pd.DataFrame | None = None,
        mode: str = "encode",
        datamodule: TrackMLDataModule | None = None,
        batch_size: int = 4096,
    ) -> pd.DataFrame:
        """Tokens of one event's hits, or positions of tokens, in memory (what ``convert``
        writes, for one event).

        ``mode="encode"``: ``data`` are the event's hits (hit_id, x, y, z in mm, volume_id,
        layer_id) with its ``particles`` and ``truth``, as
        :func:`~hepexp.data.trackml.load_event` reads them. The hits that pass the training
        data's selection (``data.selection``, noise, and for vqvae_cond tracks of at least
        ``data.min_track_hits`` hits, their first ``data.max_track_length``) get a token;
        returns hit_id, particle_id, token (int32, 0 .. codebook size - 1).

        ``mode="decode"``: ``data`` is such a token table (``token``; vqvae_cond also needs
        ``particle_id``: each particle's tokens, in row order, are one track, per
        ``event_id`` when that column exists) -> the same table plus x, y, z (mm).

        ``datamodule``: where the selection comes from; default: the training data
        (:meth:`data_source`).
        """
        self.eval()
        if mode == "encode":
            if particles is None or truth is None:
                raise ValueError(
                    "vqvae predict(mode='encode') needs the event's particles and truth"
                )
            if datamodule is None:
                datamodule = self.data_source()
            return self.encode_hits(data, particles, truth, datamodule, batch_size)
        if mode != "decode":
            raise ConfigError(f"vqvae predict mode must be 'encode' or 'decode', got '{mode}'")
        table = data if "event_id" in data.columns else data.assign(event_id=0)
        xyz = self.decode_table(table, Path("tokens"), batch_size)
        return data.assign(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2])

    def encode_hits(
        self,
        hits: pd.DataFrame,
        particles: pd.DataFrame,
        truth: pd.DataFrame,
        datamodule: TrackMLDataModule,
        batch_size: int,
    ) -> pd.DataFrame:
        """hit_id, particle_id, token of the hits of one event that pass ``datamodule``'s
        selection (see :meth:`predict`)."""
        event = select(
            hits, particles, truth, remove_noise=not datamodule.noise, **datamodule.selection
        )
        return self.encode_event(event, datamodule, batch_size)

    # -- conversion -------------------------------------------------------------------------------
    @torch.no_grad()
    def convert(
        self,
        datamodule: TrackMLDataModule,
        input_path: Path,
        output_path: Path,
        mode: str | None = None,
        batch_size: int = 4096,
        **options: Any,
    ) -> dict:
        """``mode=encode`` (default): a directory of TrackML events -> Parquet of tokens with
        columns event_id, hit_id, particle_id, token, for the hits that pass the model's data
        selection (``data.selection`` volumes/pT/hits per particle, noise removed unless
        ``data.noise``; for vqvae_cond also tracks with >= ``min_track_hits`` hits, their first
        ``max_track_length`` hits). Other hits get no row; the returned summary counts them.

        ``mode=decode``: such a token table -> the same table plus x, y, z (mm) decoded from
        the tokens (vqvae_cond decodes each (event_id, particle_id) group in row order).
        """
        if options:
            raise TypeError(f"{type(self).__name__} convert takes no options {sorted(options)}")
        self.eval()
        mode = mode or "encode"
        if mode == "encode":
            table, summary = self._encode_directory(datamodule, Path(input_path), batch_size)
        elif mode == "decode":
            table = read_tokens(Path(input_path), self.quantizer.num_codes)
            xyz = self.decode_table(table, Path(input_path), batch_size)
            table = table.assign(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2])
            summary = {"n_hits": len(table)}
        else:
            raise ConfigError(f"vqvae convert mode must be 'encode' or 'decode', got '{mode}'")
        write_parquet(table, Path(output_path))
        return {"mode": mode, "output": str(output_path), **summary}

    def _encode_directory(
        self, datamodule: TrackMLDataModule, directory: Path, batch_size: int
    ) -> tuple[pd.DataFrame, dict]:
        parts = ("hits", "particles", "truth")
        ids = list_events(directory, parts) if directory.is_dir() else []
        if not ids:
            raise DataError(
                directory, None, f"expected a directory of TrackML events with parts {parts}"
            )
        frames, n_total = [], 0
        for event_id in tqdm(ids, desc="tokenizing events", unit="event"):
            hits, particles, truth = load_event(event_prefix(directory, event_id), parts)
            n_total += len(hits)
            table = self.encode_hits(hits, particles, truth, datamodule, batch_size)
            table.insert(0, "event_id", np.full(len(table), event_id, np.int64))
            frames.append(table)
        table = pd.concat(frames, ignore_index=True)
        summary = {"n_events": len(ids), "n_hits": n_total, "n_tokens": len(table)}
        summary["n_hits_without_token"] = n_total - len(table)
        return table[list(TOKEN_COLUMNS)], summary

    def _mm(self, scaled: torch.Tensor) -> np.ndarray:
        return scaled.double().cpu().numpy() * self.coord_scale


class HitVQVAE(VQVAE):
    """Unconditional tokenizer: per-hit MLP ``3 -> hidden -> latent``, quantizer, mirror MLP.

    ``model=vqvae_uncond``: MLP 3-128-128-4 with BatchNorm, as in the original.
    """

    view = "hits"

    def __init__(
        self,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        norm: str | None = "batch",
        **common: Any,
    ) -> None:
        super().__init__(**common)
        dim = self.quantizer.dim
        self.encoder = mlp([self.n_features, *hidden, dim], activation, norm=norm)
        self.decoder = mlp([dim, *reversed(hidden), self.n_outputs], activation, norm=norm)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled positions (N, 3) -> encoder outputs (N, D)."""
        return self.encoder(hit_features(x, self.cylindrical_features))

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled positions (N, 3) -> tokens (N,); the same hit always gets the same token
        (in eval mode)."""
        return self.quantizer(self.encode(x)).indices

    @torch.no_grad()
    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (N,) -> scaled positions (N, 3)."""
        return self.positions_of(self.decoder(self.quantizer.lookup(tokens)))

    def latents(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(batch["x"])

    def hits_forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        q = self.quantizer(self.encode(x))
        reco = self.positions_of(self.decoder(q.quantized))
        out = {"true": x, "reco": reco, "tokens": q.indices}
        out["commit"] = q.loss
        for key in ("volume_id", "hit_id", "particle_id"):
            if key in batch:
                out[key] = batch[key]
        return out

    def encode_event(
        self, event: SubEvent, datamodule: TrackMLDataModule, batch_size: int
    ) -> pd.DataFrame:
        v = views.single_hits(event.hits, scale=self.coord_scale, truth=event.truth)
        x = torch.from_numpy(v["x"]).to(self.device)
        tokens = torch.cat([self.tokenize(b) for b in x.split(batch_size)]) if len(x) else x[:, 0]
        return pd.DataFrame(
            {
                "hit_id": v["hit_id"],
                "particle_id": v["particle_id"],
                "token": tokens.cpu().numpy().astype(np.int32),
            }
        )

    def decode_table(self, table: pd.DataFrame, source: Path, batch_size: int) -> np.ndarray:
        tokens = torch.from_numpy(table["token"].to_numpy(np.int64)).to(self.device)
        if not len(tokens):
            return np.zeros((0, 3))
        return self._mm(torch.cat([self.detokenize(b) for b in tokens.split(batch_size)]))


class TrackVQVAE(VQVAE):
    """Conditional tokenizer: Transformer encoder over a track's hits -> quantizer per hit ->
    Transformer decoder.

    ``Linear(features -> d) [+ position embedding] -> encoder -> Linear(d -> latent) ->
    quantizer -> Linear(latent -> d) [+ position embedding] -> decoder -> Linear(d -> 3)``;
    the decoder is a stack of self-attention layers like the encoder. Padding positions are
    masked in attention and never quantized; batches are cut to their longest track.

    Args:
        d_model, heads, ffn, layers, dropout: Transformer sizes (the original: 128, 4, 256, 3,
            0.1, post-norm, no position embedding).
        max_len: longest track (``${data.max_track_length}``), for the position embedding.
        positional: add a learned embedding of each hit's index in the track (hits are
            sorted by distance from the origin).
        norm_first: pre-norm layers (more stable) instead of the original post-norm.
        anchor: sizes of the hidden layers of an MLP that decodes each hit's code alone to an
            anchor position, which the decoder Transformer's output refines (added to it);
            null: none (the original). The Transformer then only learns a correction, which
            it does far more precisely than whole positions of up to ~5 units.
        anchor_input: the decoder Transformer also sees the anchor positions of all hits of
            the track (their input features, embedded), so that it refines a track it can see
            instead of one it must infer from codes alone. Needs ``anchor``.
    """

    view = "track_hits"

    def __init__(
        self,
        d_model: int = 128,
        heads: int = 4,
        ffn: int = 256,
        layers: int = 3,
        dropout: float = 0.0,
        activation: str = "relu",
        max_len: int = 32,
        positional: bool = True,
        norm_first: bool = True,
        anchor: Sequence[int] | None = None,
        anchor_input: bool = False,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if anchor_input and anchor is None:
            raise ConfigError("anchor_input needs an anchor MLP (set anchor, e.g. [128, 128])")
        dim = self.quantizer.dim
        self.max_len = max_len
        self.embed_in = nn.Linear(self.n_features, d_model)
        self.to_latent = nn.Linear(d_model, dim)
        self.from_latent = nn.Linear(dim, d_model)
        self.head = nn.Linear(d_model, self.n_outputs)
        self.encoder = _transformer(d_model, heads, ffn, layers, dropout, activation, norm_first)
        self.decoder = _transformer(d_model, heads, ffn, layers, dropout, activation, norm_first)
        self.positions = nn.Embedding(max_len, d_model) if positional else None
        self.pos_dec = nn.Embedding(max_len, d_model) if positional else None
        self.anchor = None if anchor is None else mlp([dim, *anchor, self.n_outputs], activation)
        self.anchor_in = nn.Linear(self.n_features, d_model) if anchor_input else None

    @staticmethod
    def _trim(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop padding columns beyond the longest track of the batch."""
        longest = int(mask.sum(1).max()) if mask.numel() else 0
        return x[:, :longest], mask[:, :longest]

    def _add_positions(self, h: torch.Tensor, table: nn.Embedding | None) -> torch.Tensor:
        if table is None:
            return h
        if h.shape[1] > self.max_len:
            raise ValueError(f"tracks longer than max_len={self.max_len} hits")
        return h + table.weight[: h.shape[1]]

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scaled positions (B, L, 3) and mask (B, L) -> encoder outputs (B, L, D)."""
        h = self._add_positions(
            self.embed_in(hit_features(x, self.cylindrical_features)), self.positions
        )
        h = self.encoder(h, src_key_padding_mask=~mask)
        return self.to_latent(h)

    def decode(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Codes (B, L, D) (anything at padding) and mask -> scaled positions (B, L, 3)."""
        h = self.from_latent(codes)
        anchor = None if self.anchor is None else self.anchor(codes)
        if self.anchor_in is not None:
            seen = hit_features(self.positions_of(anchor), self.cylindrical_features)
            h = h + self.anchor_in(seen)
        h = self._add_positions(h, self.pos_dec)
        out = self.head(self.decoder(h, src_key_padding_mask=~mask))
        if anchor is not None:
            out = out + anchor
        return self.positions_of(out)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, 3), (B, L) -> reconstruction (B, L', 3), tokens (B, L') (-1 at padding),
        commitment loss, encoder outputs of the real hits (N, D); L' = longest track."""
        x, mask = self._trim(x, mask)
        z = self.encode(x, mask)
        q = self.quantizer(z[mask])
        codes = torch.zeros_like(z)
        codes[mask] = q.quantized.to(z.dtype)
        tokens = torch.full(mask.shape, -1, dtype=torch.long, device=x.device)
        tokens[mask] = q.indices
        return self.decode(codes, mask), tokens, q.loss, z[mask]

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Tracks (B, L, 3) scaled, mask (B, L) -> tokens (B, L), -1 at padding."""
        tokens = torch.full(mask.shape, -1, dtype=torch.long, device=x.device)
        xt, mt = self._trim(x, mask)
        part = tokens[:, : mt.shape[1]]
        part[mt] = self.quantizer(self.encode(xt, mt)[mt]).indices
        return tokens

    @torch.no_grad()
    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L), -1 at padding (hits first) -> scaled positions (B, L, 3)."""
        mask = tokens >= 0
        codes = self.quantizer.lookup(tokens.clamp_min(0))
        return self.decode(codes, mask)

    def latents(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x, mask = self._trim(batch["x"], batch["mask"])
        return self.encode(x, mask)[mask]

    def hits_forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        reco, tokens, commit, z = self(batch["x"], batch["mask"])
        mask = tokens >= 0
        length = mask.shape[1]
        out = {
            "true": batch["x"][:, :length][mask],
            "reco": reco[mask],
            "tokens": tokens[mask],
            "commit": commit,
            "z": z,
        }
        for key in ("volume_id", "hit_id"):
            if key in batch:
                out[key] = batch[key][:, :length][mask]
        if "particle_id" in batch:
            out["particle_id"] = batch["particle_id"][:, None].expand(mask.shape)[mask]
        track = torch.arange(len(mask), device=mask.device)
        out["track"] = track[:, None].expand(mask.shape)[mask]
        return out

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict:
        result = super().predict_step(batch, batch_idx)
        # unique track numbers over the whole prediction (batches are not shuffled)
        result["track"] = result["track"] + batch_idx * len(batch["x"])
        return result

    def encode_event(
        self, event: SubEvent, datamodule: TrackMLDataModule, batch_size: int
    ) -> pd.DataFrame:
        v = views.track_hits(
            event.hits,
            event.truth,
            event.particles,
            max_len=datamodule.view_options["max_track_length"],
            scale=self.coord_scale,
            min_hits=datamodule.view_options["min_track_hits"],
        )
        x = torch.from_numpy(v["x"]).to(self.device)
        mask = torch.from_numpy(v["mask"]).to(self.device)
        tokens = torch.full(mask.shape, -1, dtype=torch.long)
        for start in range(0, len(x), batch_size):
            part = self.tokenize(x[start : start + batch_size], mask[start : start + batch_size])
            tokens[start : start + batch_size] = part.cpu()
        m = v["mask"]
        return pd.DataFrame(
            {
                "hit_id": v["hit_id"][m],
                "particle_id": np.broadcast_to(v["particle_id"][:, None], m.shape)[m],
                "token": tokens.numpy()[m].astype(np.int32),
            }
        )

    def decode_table(self, table: pd.DataFrame, source: Path, batch_size: int) -> np.ndarray:
        for column in ("event_id", "particle_id"):
            if column not in table.columns:
                raise DataError(
                    source, column, "vqvae_cond decodes tracks: needs event_id, particle_id"
                )
        keys = table[["event_id", "particle_id"]].astype("int64")
        group, _ = pd.MultiIndex.from_frame(keys).factorize()
        group = np.asarray(group)
        position = pd.Series(group).groupby(group).cumcount().to_numpy()
        n_groups = int(group.max()) + 1 if len(group) else 0
        longest = int(position.max()) + 1 if len(group) else 0
        if self.positions is not None and longest > self.max_len:
            raise DataError(
                source,
                "particle_id",
                f"a track has {longest} tokens; this model decodes at most {self.max_len}",
            )
        padded = np.full((n_groups, max(longest, 1)), -1, np.int64)
        padded[group, position] = table["token"].to_numpy(np.int64)
        padded_t = torch.from_numpy(padded).to(self.device)
        xyz = torch.zeros(n_groups, padded.shape[1], 3, dtype=torch.float64)
        for start in range(0, n_groups, batch_size):
            part = padded_t[start : start + batch_size]
            xyz[start : start + batch_size, : part.shape[1]] = self.detokenize(part).double().cpu()
        return xyz.numpy()[group, position] * self.coord_scale


def _transformer(
    d: int, heads: int, ffn: int, layers: int, dropout: float, activation: str, norm_first: bool
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d, heads, ffn, dropout, activation=activation, batch_first=True, norm_first=norm_first
    )
    final = nn.LayerNorm(d) if norm_first else None
    return nn.TransformerEncoder(layer, layers, norm=final, enable_nested_tensor=False)


# -- token files -------------------------------------------------------------------------------------
def read_tokens(path: Path, num_codes: int) -> pd.DataFrame:
    """A token table (Parquet) with at least a ``token`` column of ints in [0, num_codes)."""
    if not path.exists():
        raise DataError(path, None, "token file not found")
    try:
        table = pd.read_parquet(path)
    except Exception as err:
        raise DataError(path, None, f"cannot read as Parquet: {err}") from err
    if "token" not in table.columns:
        raise DataError(path, "token", f"missing column; expected columns {TOKEN_COLUMNS}")
    tokens = table["token"]
    if tokens.dtype.kind not in "iu":
        raise DataError(path, "token", f"expected integer tokens, got dtype {tokens.dtype}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= num_codes):
        raise DataError(path, "token", f"tokens must be in [0, {num_codes}) for this model")
    for column in ("event_id", "hit_id", "particle_id"):
        if column in table.columns and table[column].dtype.kind not in "iu":
            raise DataError(path, column, f"expected int64 ids, got {table[column].dtype}")
    return table


def write_parquet(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=path.name == "per_volume.csv", index_label="volume")


__all__ = ["HitVQVAE", "TrackVQVAE", "VQVAE", "hit_features"]
