"""model=jet_ae: jet 4-vector (m, pt, phi, eta) -> a few latent numbers -> 4-vector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from hepexp.data.jets.io import (
    JET_COLUMNS,
    UNIT_SCALE_TO_GEV,
    resolve_units,
    validate_jets,
    write_jets,
)
from hepexp.data.transforms import FeatureTransform
from hepexp.errors import ConfigError, DataError
from hepexp.metrics.jets import residual_metrics
from hepexp.models.base import HEPModule
from hepexp.nn.blocks import mlp

if TYPE_CHECKING:
    from hepexp.data.jets import JetDataModule

#: features whose sign ``symmetric`` models keep exactly (the jet distribution is symmetric)
ODD_FEATURES = ("phi", "eta")


class JetAutoencoder(HEPModule):
    """MLP autoencoder of jet 4-vectors; the loss is the MSE of the normalised features.

    Three numbers cannot hold four independent ones: ``loss_weights`` (one per feature; default
    0.01 for m and 1 for pt, phi, eta; None: equal) decide which features the latent space
    favours.

    ``skip``: linear paths from input to latent and from latent to output beside the MLPs
    (whose last layers then start at zero): a linear autoencoder from the start, which can pass
    3 of the 4 features through exactly, the MLPs learning the corrections.

    ``symmetric``: the reconstruction is exactly odd in phi and in eta, as the jet distribution
    is symmetric under phi -> -phi and eta -> -eta. The networks see abs(phi), abs(eta); the
    last two latents are phi and eta times learned factors, and the decoder multiplies them by
    learned factors again, so phi = 0 (eta = 0) comes back exactly 0 and the relative residual
    of phi (eta) stays finite near 0.

    ``hidden`` are the encoder's hidden sizes; the decoder mirrors them. ``model=jet_ae`` is
    AE_3D_200 (4-200-100-50-3-50-100-200-4, tanh).
    """

    view = "jet_vectors"

    def __init__(
        self,
        features: Sequence[str] = JET_COLUMNS,
        transforms: Sequence[Mapping[str, Any]] = (),
        hidden: Sequence[int] = (200, 100, 50),
        latent_dim: int = 3,
        activation: str = "silu",
        norm: str | None = None,
        dropout: float = 0.0,
        loss_weights: Sequence[float] | None = (0.01, 1.0, 1.0, 1.0),
        skip: bool = True,
        symmetric: bool = True,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.features = list(features)
        weights = (
            torch.ones(len(self.features)) if loss_weights is None else torch.tensor(loss_weights)
        )
        if weights.shape != (len(self.features),) or (weights < 0).any():
            raise ConfigError(
                f"loss_weights needs {len(self.features)} non-negative numbers, got {loss_weights}"
            )
        self.register_buffer("loss_weights", weights / weights.mean(), persistent=False)
        self.latent_dim = latent_dim
        self.transform = FeatureTransform(self.features, transforms)
        n = len(self.features)
        self.encoder = mlp([n, *hidden, latent_dim], activation, norm=norm, dropout=dropout)
        self.decoder = mlp(
            [latent_dim, *reversed(hidden), n], activation, norm=norm, dropout=dropout
        )
        self.skip = skip
        if skip:
            # linear paths beside the MLPs, which start at zero and learn the corrections
            self.encoder_linear = torch.nn.Linear(n, latent_dim)
            self.decoder_linear = torch.nn.Linear(latent_dim, n)
            for net in (self.encoder, self.decoder):
                torch.nn.init.zeros_(net[-1].weight)
                torch.nn.init.zeros_(net[-1].bias)
        self.symmetric = symmetric
        if symmetric:
            self._setup_symmetry(latent_dim)

    def _setup_symmetry(self, latent_dim: int) -> None:
        """Index buffers of the odd features (phi, eta) and their latents (the last ones)."""
        if latent_dim < len(ODD_FEATURES) + 1:
            raise ConfigError(f"model.symmetric needs latent_dim >= 3, got {latent_dim}")
        odd_in = [self.features.index(f) for f in ODD_FEATURES]
        for i in odd_in:
            odd_normalisation = (
                self.transform.fns[i] == "identity"
                and self.transform.fit_loc[i] is None
                and float(self.transform.loc[i]) == 0.0
                and float(self.transform.offset[i]) == 0.0
            )
            if not odd_normalisation:
                raise ConfigError(
                    f"model.symmetric needs {self.features[i]} normalised without fn, offset "
                    "or loc (a scale only), so that its sign survives normalisation"
                )
        odd_latent = list(range(latent_dim - len(ODD_FEATURES), latent_dim))
        n = len(self.features)
        # for each latent (output) column, the input (latent) column whose sign it carries
        to_latent = torch.zeros(latent_dim, dtype=torch.long)
        to_latent[odd_latent] = torch.tensor(odd_in)
        to_output = torch.zeros(n, dtype=torch.long)
        to_output[odd_in] = torch.tensor(odd_latent)
        for name, value in (
            ("_odd_in", torch.isin(torch.arange(n), torch.tensor(odd_in))),
            ("_odd_latent", torch.isin(torch.arange(latent_dim), torch.tensor(odd_latent))),
            ("_sign_to_latent", to_latent),
            ("_sign_to_output", to_output),
        ):
            self.register_buffer(name, value, persistent=False)

    # -- model ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features -> reconstructed normalised features."""
        return self._decode(self._encode(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.where(self._odd_in, x.abs(), x) if self.symmetric else x
        z = self.encoder(h)
        if self.skip:
            z = z + self.encoder_linear(h)
        if self.symmetric:  # odd latents: phi (eta) times a function of the folded jet
            z = torch.where(self._odd_latent, x[:, self._sign_to_latent] * (1 + z), z)
        return z

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.where(self._odd_latent, z.abs(), z) if self.symmetric else z
        y = self.decoder(h)
        if self.skip:
            y = y + self.decoder_linear(h)
        if self.symmetric:
            y = torch.where(self._odd_in, z[:, self._sign_to_output] * (1 + y), y)
        return y

    def encode(self, jets: torch.Tensor) -> torch.Tensor:
        """Raw jets (N, 4) in GeV -> latents (N, latent_dim)."""
        return self._encode(self.transform(jets))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> raw jets (N, 4) in GeV."""
        return self.transform.inverse(self._decode(latents))

    # -- training ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and not self.transform.is_fitted:
            self.transform.fit(self.datamodule.fit_sample())

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.transform(batch)
        return ((self(x) - x) ** 2 * self.loss_weights).mean()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log(
            "val/loss", self._loss(batch), prog_bar=True, batch_size=len(batch), sync_dist=True
        )

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch), batch_size=len(batch), sync_dist=True)

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.decode(self.encode(batch))

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self, trainer: pl.Trainer, datamodule: JetDataModule, out_dir: Path, split: str = "test"
    ) -> dict:
        """Residual mean/RMS/sigma68 per variable (relative for m, pt, E) and plots."""
        from hepexp.plotting.jets import plot_jet_reconstruction

        loader = datamodule.loader(split, shuffle=False, batch_size=8192)
        outputs = trainer.predict(self, dataloaders=loader)
        pred = torch.cat(outputs).double().numpy()
        true = datamodule.dataset(split).values.double().numpy()
        as_dict = lambda a: {f: a[:, i] for i, f in enumerate(self.features)}  # noqa: E731
        metrics = residual_metrics(as_dict(true), as_dict(pred))
        metrics["n_jets"] = len(true)
        plot_jet_reconstruction(as_dict(true), as_dict(pred), out_dir)
        return metrics

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        data: pd.DataFrame | np.ndarray,
        mode: str = "reconstruct",
        units: str | None = None,
        batch_size: int = 65536,
    ) -> pd.DataFrame:
        """Jets through the autoencoder, in memory (the normalisation of training applies).

        ``mode="reconstruct"``: ``data`` are jets (a DataFrame with columns m, pt, phi, eta, or
        an (N, 4) array in that order) -> DataFrame m, pt, phi, eta of the decoded jets.
        ``mode="encode"``: jets -> DataFrame ``latent_0 .. latent_{k-1}``.
        ``mode="decode"``: latents (such a DataFrame, or an (N, k) array) -> jets.

        m and pt are in ``units`` (MeV, GeV or TeV) in and out, phi and eta in rad and as
        is; default: the training data's ``data.units`` when the model has its run config
        (:func:`hepexp.load_model`), else MeV (the ATLAS tables and
        :func:`~hepexp.data.jets.simulate_jets`). Rows keep the index of a DataFrame input.
        """
        if units is None:
            stored = self.run_config.data.get("units") if self.run_config is not None else None
            units = stored or "MeV"
        self.eval()
        latent_cols = [f"latent_{i}" for i in range(self.latent_dim)]
        if mode in ("reconstruct", "encode"):
            table = data if isinstance(data, pd.DataFrame) else _frame(data, self.features)
            jets = validate_jets(table, units, source="jets")  # m, pt in GeV
            values = torch.tensor(jets[self.features].to_numpy(np.float32), device=self.device)
            latents = torch.cat([self.encode(b) for b in values.split(batch_size)])
            if mode == "encode":
                return _frame(latents.cpu().numpy(), latent_cols, table.index)
        elif mode == "decode":
            table = data if isinstance(data, pd.DataFrame) else _frame(data, latent_cols)
            missing = [c for c in latent_cols if c not in table.columns]
            if missing:
                raise DataError("latents", missing[0], f"decode needs columns {latent_cols}")
            latents = torch.tensor(table[latent_cols].to_numpy(np.float32), device=self.device)
            if not torch.isfinite(latents).all():
                raise DataError("latents", "latent_*", "NaN or infinite latents")
        else:
            raise ConfigError(
                f"jet_ae predict mode must be 'reconstruct', 'encode' or 'decode', got '{mode}'"
            )
        decoded = torch.cat([self.decode(b) for b in latents.split(batch_size)])
        jets = _frame(decoded.double().cpu().numpy(), self.features, table.index)
        scale = UNIT_SCALE_TO_GEV[units]
        jets["m"] /= scale
        jets["pt"] /= scale
        return jets

    # -- conversion ----------------------------------------------------------------------------
    @torch.no_grad()
    def convert(
        self,
        datamodule: JetDataModule,
        input_path: Path,
        output_path: Path,
        mode: str | None = None,
        units: str | None = None,
        batch_size: int = 65536,
        **options: Any,
    ) -> dict:
        """``mode=encode``: jet table -> its columns + ``latent_0..``; ``mode=decode``: the reverse.

        Encoded output keeps m and pt in the input's units; decoded jets are written in
        ``units`` (default: the data config's units, else MeV as in the ATLAS tables).
        """
        if options:
            raise TypeError(f"jet_ae convert takes no options {sorted(options)}")
        mode = mode or "encode"
        if mode == "encode":
            jets = datamodule.read(input_path, units=units)  # m, pt in GeV
            latents = self.predict(jets, "encode", units="GeV", batch_size=batch_size)
            scale = UNIT_SCALE_TO_GEV[resolve_units(input_path, units or datamodule.units)]
            out = jets.copy()
            out["m"] /= scale
            out["pt"] /= scale
            out = pd.concat([out, latents], axis=1)
        elif mode == "decode":
            table = (
                pd.read_parquet(input_path)
                if str(input_path).endswith(".parquet")
                else pd.read_csv(input_path)
            )
            units = units or datamodule.units or "MeV"
            try:
                jets = self.predict(table, "decode", units=units, batch_size=batch_size)
            except DataError as err:  # name the file
                raise DataError(input_path, err.field, err.problem) from None
            latent_cols = [f"latent_{i}" for i in range(self.latent_dim)]
            out = pd.concat([jets, table[latent_cols]], axis=1)
        else:
            raise ConfigError(f"jet_ae convert mode must be 'encode' or 'decode', got '{mode}'")
        write_jets(output_path, out)
        return {"mode": mode, "n_jets": len(out), "output": str(output_path)}


def _frame(
    values: np.ndarray, columns: Sequence[str], index: pd.Index | None = None
) -> pd.DataFrame:
    """An (N, len(columns)) array as a DataFrame with these columns."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(columns):
        raise ValueError(f"expected an array of shape (N, {len(columns)}), got {values.shape}")
    return pd.DataFrame(values, columns=list(columns), index=index)
