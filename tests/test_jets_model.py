"""model=jet_ae: the symmetric architecture and the 10-minute default recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hepexp.checkpoint import build_model
from hepexp.errors import ConfigError
from hepexp.models.jet_ae import JetAutoencoder

from .conftest import compose_config

TRANSFORMS = [
    {"name": "m", "fn": "log10", "offset": 1.0, "scale": 1.8},
    {"name": "pt", "fn": "log10", "loc": 1.3, "scale": 1.2},
    {"name": "phi", "scale": 3.0},
    {"name": "eta", "scale": 5.0},
]


def _randomised(model: JetAutoencoder) -> JetAutoencoder:
    """The model with random weights everywhere (no layer left at its zero start)."""
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model


@pytest.mark.parametrize("skip", [False, True])
def test_symmetric_reconstruction_is_odd_in_phi_and_eta(skip: bool) -> None:
    model = _randomised(
        JetAutoencoder(transforms=TRANSFORMS, symmetric=True, skip=skip, activation="silu")
    )
    jets = torch.tensor([[8.0, 60.0, 0.7, -1.3], [3.0, 25.0, -2.9, 0.2]], dtype=torch.float64)
    model = model.double()
    out = model.decode(model.encode(jets))
    for flip in ([1, 1, -1, 1], [1, 1, 1, -1], [1, 1, -1, -1]):
        sign = torch.tensor(flip, dtype=torch.float64)
        flipped = model.decode(model.encode(jets * sign))
        torch.testing.assert_close(flipped, out * sign, rtol=1e-12, atol=1e-12)
    # phi = 0 and eta = 0 come back exactly 0, and their latents are 0
    at_zero = jets.clone()
    at_zero[:, 2:] = 0.0
    latents = model.encode(at_zero)
    assert (latents[:, -2:] == 0).all()
    assert (model.decode(latents)[:, 2:] == 0).all()
    # the even features do not depend on the signs, and the output is not trivial
    assert not torch.allclose(out[:, :2], jets[:, :2])


def test_plain_model_is_not_symmetric() -> None:
    model = _randomised(JetAutoencoder(transforms=TRANSFORMS, symmetric=False)).double()
    jets = torch.tensor([[8.0, 60.0, 0.0, 0.0]], dtype=torch.float64)
    assert (model.decode(model.encode(jets))[:, 2:].abs() > 1e-6).all()


def test_symmetric_needs_sign_preserving_normalisation() -> None:
    shifted = [*TRANSFORMS[:3], {"name": "eta", "loc": "mean", "scale": 5.0}]
    with pytest.raises(ConfigError, match="eta normalised without fn, offset or loc"):
        JetAutoencoder(transforms=shifted, symmetric=True)
    with pytest.raises(ConfigError, match="latent_dim >= 3"):
        JetAutoencoder(transforms=TRANSFORMS, symmetric=True, latent_dim=2)


def test_default_recipe_is_a_ten_minute_job(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, ["model=jet_ae", "data=atlas_jets"])
    assert (cfg.time_budget, cfg.trainer.max_epochs) == ("00:00:10:00", 100000)
    assert cfg.model.scheduler._target_.endswith("TimedOneCycleLR")
    assert (cfg.model.symmetric, cfg.model.skip, cfg.model.activation) == (True, True, "silu")
    assert cfg.data.batch_size == 1024
    assert list(cfg.model.loss_weights) == [0.01, 1.0, 1.0, 1.0]
    # the command line still decides
    quick = compose_config(
        tmp_path, ["model=jet_ae", "data=atlas_jets", "trainer=cpu", "time_budget=00:00:01:00"]
    )
    assert (quick.time_budget, quick.trainer.accelerator) == ("00:00:01:00", "cpu")


def test_paper_preset_is_the_published_ae_3d_200(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, ["model=jet_ae_paper", "data=atlas_jets"])
    model = build_model(cfg.model)
    assert (model.symmetric, model.skip, cfg.model.activation) == (False, False, "tanh")
    assert torch.equal(model.loss_weights, torch.ones(4))
    sizes = [m.out_features for m in [*model.encoder, *model.decoder] if hasattr(m, "weight")]
    assert sizes == [200, 100, 50, 3, 50, 100, 200, 4]


def test_presets_keep_the_recipe_but_change_the_latent_or_network(tmp_path: Path) -> None:
    four = compose_config(tmp_path, ["model=jet_ae_4d", "data=atlas_jets"])
    assert (four.model.latent_dim, four.model.loss_weights, four.model.symmetric) == (4, None, True)
    seed = compose_config(tmp_path, ["model=jet_ae_seed", "data=atlas_jets"])
    assert (seed.model.activation, seed.model.scheduler, seed.model.optimizer.lr) == (
        "leaky_relu",
        None,
        1.0e-4,
    )


def test_config_mistakes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="loss_weights needs 4 non-negative numbers"):
        JetAutoencoder(transforms=TRANSFORMS, loss_weights=[1.0, 1.0])
    # the same kind of mistake in another model's settings: the same error class
    from hepexp.nn.attention import AttentionContext

    with pytest.raises(ConfigError, match="attention layout must be 'padded' or 'packed'"):
        AttentionContext(torch.ones(2, 3, dtype=torch.bool), layout="ragged")
