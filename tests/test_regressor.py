"""regressor_flash on toy events: training, the clustering scan, evaluation, augmentation."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from hepexp.models.regressor import TransformerRegressor

from .regressor_helpers import ToyTrackMLData, pad_collate

SMALL = {"dim": 32, "layers": 2, "heads": 4, "ffn": 64, "dropout": 0.0}


def _model(**kw) -> TransformerRegressor:
    torch.manual_seed(0)
    options = {
        **SMALL,
        "optimizer": functools.partial(torch.optim.Adam, lr=3e-3),
        "clustering": {"n_jobs": 1},
        "scan": {
            "max_events": 24,
            "min_cluster_size": [3, 5],
            "min_samples": [1, 2],
            "q_scale": [0.25, 1.0],
        },
    }
    return TransformerRegressor(**(options | kw))


@pytest.fixture(scope="module")
def toy() -> ToyTrackMLData:
    return ToyTrackMLData(n_events=(384, 24, 24), particles=(10, 30), batch_size=16, seed=5)


@pytest.fixture(scope="module")
def trained(toy: ToyTrackMLData, tmp_path_factory: pytest.TempPathFactory):
    """A small model trained for a few epochs on toy events, then evaluated."""
    out = tmp_path_factory.mktemp("regressor")
    model = _model(val_score_events=16, augment={"rotate_phi": True, "flip_z": True})
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val/loss", save_last=True)
    trainer = pl.Trainer(
        max_epochs=4,
        accelerator="cpu",
        default_root_dir=str(out),
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=toy)
    evaluator = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    metrics = model.evaluate(evaluator, toy, out / "evaluation")
    return model, trainer, checkpoint, metrics, out


@pytest.mark.slow
def test_training_learns_tracks(trained) -> None:
    model, trainer, _, metrics, out = trained
    assert metrics["n_events"] == 24
    assert metrics["trackml_score"] > 0.6, metrics
    assert metrics["double_majority"] > 0.7, metrics
    assert metrics["residual_std_theta"] < 0.3
    assert metrics["residual_rms_theta"] >= metrics["residual_std_theta"] > 0
    for key in ("perfect", "lhc", "double_majority_pt0.9", "perfect_pt0.9", "lhc_pt0.9"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["time_model_ms_per_event"] > 0 and metrics["time_clustering_ms_per_event"] > 0
    assert "val/trackml_score" in trainer.callback_metrics
    for plot in ("efficiency", "residuals", "event_display"):
        for suffix in (".png", ".pdf"):
            assert (out / "evaluation" / (plot + suffix)).stat().st_size > 10_000, plot + suffix
    json.dumps(metrics)  # plain numbers


@pytest.mark.slow
def test_scan_choice_is_saved_in_the_checkpoints(trained) -> None:
    model, _, checkpoint, metrics, out = trained
    scan = pd.read_csv(out / "clustering_scan.csv")
    assert len(scan) == 2 * 2 * 2 and set(scan.q_scale) == {0.25, 1.0}
    assert (out / "clustering_scan.png").stat().st_size > 5_000
    assert (out / "clustering_scan.pdf").stat().st_size > 5_000
    best = scan.iloc[scan["score"].idxmax()]
    chosen = [float(best.min_cluster_size), float(best.min_samples), float(best.q_scale)]
    assert model.cluster_params.tolist() == chosen
    assert [metrics["min_cluster_size"], metrics["min_samples"], metrics["q_scale"]] == chosen
    for path in (checkpoint.best_model_path, checkpoint.last_model_path):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert state["cluster_params"].tolist() == chosen, path
    fresh = _model()
    fresh.load_state_dict(torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"])
    keys = ("min_cluster_size", "min_samples", "q_scale")
    assert fresh.cluster_settings() == dict(zip(keys, chosen, strict=True))


def test_cluster_settings_priority() -> None:
    model = _model()
    default = {"min_cluster_size": 5, "min_samples": 2, "q_scale": 1.0}
    assert model.cluster_settings() == default  # no scan yet
    model.cluster_params.copy_(torch.tensor([7, 3, 0.25]))
    scanned = {"min_cluster_size": 7, "min_samples": 3, "q_scale": 0.25}
    assert model.cluster_settings() == scanned
    model.clustering["min_samples"] = 1
    assert model.cluster_settings() == scanned | {"min_samples": 1}  # explicit wins
    np.testing.assert_allclose(
        model.cluster_features(np.ones((2, 4), np.float32), 0.25), [[1, 1, 1, 0.25]] * 2
    )


def test_augmentation_moves_hits_and_targets_together(toy: ToyTrackMLData) -> None:
    batch = pad_collate([toy.dataset("train")[i] for i in range(8)])
    model = _model(augment={"rotate_phi": True, "flip_z": True})
    torch.manual_seed(3)
    aug = model.augmented(batch)
    mask, real = batch["mask"], batch["particle_id"] > 0
    # hit azimuth rotates by the same angle as the particle's phi
    hit_turn = torch.atan2(aug["x"][..., 1], aug["x"][..., 0]) - torch.atan2(
        batch["x"][..., 1], batch["x"][..., 0]
    )
    phi_turn = torch.atan2(aug["y"][..., 1], aug["y"][..., 2]) - torch.atan2(
        batch["y"][..., 1], batch["y"][..., 2]
    )
    diff = torch.remainder(hit_turn - phi_turn + torch.pi, 2 * torch.pi) - torch.pi
    assert diff[real].abs().max() < 1e-4
    assert torch.remainder(hit_turn[:, 0], 2 * torch.pi).std() > 0.1, "angles differ by event"
    # z flips exactly when theta -> pi - theta; radius and charge unchanged
    flipped = torch.sign(aug["x"][..., 2]) != torch.sign(batch["x"][..., 2])
    theta_flipped = (aug["y"][..., 0] - batch["y"][..., 0]).abs() > 1e-6
    moved = real & (batch["y"][..., 0] - torch.pi / 2).abs().gt(1e-3)
    assert torch.equal(flipped[moved], theta_flipped[moved])
    torch.testing.assert_close(aug["x"][..., :2].norm(dim=-1), batch["x"][..., :2].norm(dim=-1))
    assert torch.equal(aug["y"][..., 3], batch["y"][..., 3])
    assert (aug["y"][~mask] == 0).all() and torch.equal(aug["mask"], mask)


def test_packed_and_padded_training_steps_agree(toy: ToyTrackMLData) -> None:
    batch = pad_collate([toy.dataset("train")[i] for i in range(6)])
    params = {}
    for layout in ("padded", "packed"):
        model = _model(attention={"layout": layout})
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = model._loss(batch)
        loss.backward()
        opt.step()
        params[layout] = (loss.detach(), torch.cat([p.flatten() for p in model.parameters()]))
    torch.testing.assert_close(params["packed"][0], params["padded"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(params["packed"][1], params["padded"][1], rtol=1e-4, atol=1e-5)


def test_loss_ignores_noise_and_padding(toy: ToyTrackMLData) -> None:
    batch = pad_collate([toy.dataset("train")[i] for i in range(4)])
    model = _model().eval()
    base = model._loss(batch)
    changed = dict(batch)
    changed["y"] = batch["y"].clone()
    changed["y"][~batch["mask"]] = 100.0
    with torch.no_grad():
        assert torch.equal(model._loss(changed), base)
    noise = dict(batch)
    noise["particle_id"] = batch["particle_id"].clone()
    noise["particle_id"][:, :5] = 0
    noise["y"] = batch["y"].clone()
    noise["y"][:, :5] = 50.0
    with torch.no_grad():
        assert model._loss(noise) < 10, "noise targets are not regressed by default"


def test_wrong_number_of_targets_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_targets"):
        TransformerRegressor(num_targets=3)


def test_unknown_augmentation_is_rejected() -> None:
    with pytest.raises(ValueError, match="augment"):
        _model(augment={"mirror": True})


def test_predictions_follow_dataset_order(toy: ToyTrackMLData) -> None:
    model = _model()
    events = model.predict_events(toy, "val", max_events=10)
    ids = [eid for eid, *_ in toy.events("val")][:10]
    assert [e["event_id"] for e in events] == ids
    first = next(iter(toy.events("val")))
    np.testing.assert_array_equal(events[0]["hit_id"], first[1]["hit_id"].to_numpy())
    assert events[0]["pred"].shape == (len(first[1]), 4)


def test_azimuthal_geometric_attention_ignores_z() -> None:
    """With geometric_attention='azimuth', the attention prior sees only the hits' azimuth:
    moving every hit along z changes the outputs only through the embedding inputs, so with
    direction features off and the embedding of z zeroed, outputs do not change at all."""
    torch.manual_seed(1)
    model = _model(geometric_attention="azimuth", hit_frame=False, direction_features=False)
    assert model.net.layers[0].attn.geometry_dims == 2
    with torch.no_grad():
        model.net.embed.weight[:, 2] = 0.0  # the embedding does not see z
    model.eval()
    x = torch.randn(2, 30, 3)
    shifted = x.clone()
    shifted[..., 2] += torch.randn(2, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(shifted))
        full = _model(geometric_attention=True, hit_frame=False, direction_features=False)
        full.load_state_dict(model.state_dict(), strict=False)
        full.eval()
        assert not torch.allclose(full(x), full(shifted)), "the polar direction does change it"
    with pytest.raises(ValueError, match="geometric_attention"):
        _model(geometric_attention="polar")
