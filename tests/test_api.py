"""The notebook API: package exports, hepexp.load_model, and model.predict for all six systems.

Each model is trained for one epoch on tiny simulated data by the real train task (so the
checkpoints are the ones users get); predict on plain frames must give what the model's own
evaluation path (data module -> loader -> model) gives for the same events.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import hepexp
from hepexp.errors import ConfigError, DataError
from hepexp.metrics import score_event
from hepexp.reco.clustering import submission
from hepexp.run.train import train

from .conftest import ROOT, TINY_DATA, compose_config

QUICK = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "evaluate_after=false",
    "callbacks.model_summary=null",
    "+trainer.enable_progress_bar=false",
]
TRACKML_WHOLE_EVENTS = [
    "data.prepare_workers=1",
    "data.simulation.n_events=3",
    "data.simulation.n_particles=200",
    "data.splits={train:1,val:1,test:1}",
]
TINY = {
    "jet_ae": ["data=atlas_jets", *TINY_DATA["atlas_jets"], "data.batch_size=512"],
    "regressor_flash": [
        *TINY_DATA["trackml"],
        "data.prepare_workers=1",
        "model.dim=16",
        "model.layers=1",
        "model.heads=2",
        "model.ffn=32",
        "model.clustering.n_jobs=1",
        "model.scan.min_cluster_size=[3]",
        "model.scan.min_samples=[1]",
        "model.scan.q_scale=[1.0]",
    ],
    "interaction_gnn": [
        "data.prepare_workers=1",
        "data.simulation.n_events=4",
        "data.simulation.n_particles=60",
        "data.splits={train:2,val:1,test:1}",
        "model.hidden=8",
        "model.n_iterations=1",
        "model.filter.epochs=1",
        "model.filter.hidden=8",
        "model.filter.layers=1",
    ],
    "vqvae_uncond": [
        *TRACKML_WHOLE_EVENTS,
        "model.quantizer.num_codes=32",
        "model.kmeans_iters=3",
        "model.hidden=[16]",
    ],
    "vqvae_cond": [
        *TRACKML_WHOLE_EVENTS,
        "model.quantizer.num_codes=32",
        "model.kmeans_iters=3",
        "model.d_model=16",
        "model.ffn=16",
        "model.layers=1",
        "model.heads=2",
    ],
    "om2vec": [
        "data=prometheus",
        *TINY_DATA["prometheus"],
        "data.batch_size=512",
        "model.latent_dim=8",
        "model.encoder.embed_dim=16",
        "model.encoder.hidden=16",
        "model.encoder.exact_bins=2",
        "model.decoder.hidden=16",
        "model.decoder.rank=16",
    ],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The best checkpoint of a one-epoch run of a system on tiny data, trained on first use."""

    class Trained(dict):
        def __missing__(self, name: str) -> Path:
            torch.manual_seed(0)
            overrides = [f"model={name}", *TINY[name], *QUICK]
            cfg = compose_config(tmp_path_factory.mktemp(name), overrides)
            train(cfg)
            self[name] = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
            return self[name]

    return Trained()


# -- package exports -------------------------------------------------------------------------------
PACKAGES = (
    "hepexp",
    "hepexp.data.trackml",
    "hepexp.data.jets",
    "hepexp.data.prometheus",
    "hepexp.metrics",
)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_reading_data_does_not_import_lightning() -> None:
    code = (
        "import sys, hepexp\n"
        "assert 'torch' not in sys.modules\n"
        "from hepexp.data.trackml import load_event, simulate_event, write_event\n"
        "from hepexp.data.jets import read_jets, simulate_jets\n"
        "from hepexp.data.prometheus import read_events, om_histograms\n"
        "from hepexp.metrics import score_event, residual_metrics\n"
        "assert 'pytorch_lightning' not in sys.modules, 'Lightning imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_trackml_names_are_the_functions_of_the_submodules() -> None:
    from hepexp.data import trackml
    from hepexp.data.trackml import datamodule, io, simulate

    assert trackml.load_event is io.load_event
    assert trackml.simulate_event is simulate.simulate_event
    assert trackml.TrackMLDataModule is datamodule.TrackMLDataModule


# -- load_model --------------------------------------------------------------------------------------
def test_load_model_restores_the_trained_model_and_its_config(checkpoints: dict) -> None:
    ckpt = checkpoints["jet_ae"]
    model = hepexp.load_model(ckpt)
    assert not model.training and model.device.type == "cpu"
    assert model.run_config.data.simulation.n_train == 3000
    assert model.run_config.model._target_ == "hepexp.models.jet_ae.JetAutoencoder"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    # overrides, as a mapping or as dotted strings
    weights = [1.0, 2.0, 3.0, 2.0]
    for overrides in (
        {"model": {"loss_weights": weights}},
        [f"model.loss_weights=[{','.join(map(str, weights))}]"],
    ):
        changed = hepexp.load_model(ckpt, overrides=overrides)
        torch.testing.assert_close(changed.loss_weights, torch.tensor(weights) / 2.0)
    with pytest.raises(DataError, match="checkpoint not found"):
        hepexp.load_model(ckpt.parent / "missing.ckpt")


def test_a_model_without_its_run_config_asks_for_the_data_settings(checkpoints: dict) -> None:
    model = hepexp.load_model(checkpoints["vqvae_uncond"])
    model.run_config = None
    hits = pd.DataFrame({"hit_id": [1], "x": [1.0], "y": [0.0], "z": [0.0]})
    with pytest.raises(ConfigError, match="hepexp.load_model"):
        model.predict(hits, hits, hits)


# -- predict, model by model -------------------------------------------------------------------------
def test_jet_ae_predict_is_the_evaluation_path(checkpoints: dict) -> None:
    model = hepexp.load_model(checkpoints["jet_ae"])
    dm = model.data_source()
    with torch.no_grad():
        loader = dm.loader("test", shuffle=False, batch_size=4096)
        expected = torch.cat([model.predict_step(b, 0) for b in loader]).double().numpy()  # GeV
    table = dm.table("test")  # GeV
    jets_mev = table.assign(m=table.m * 1e3, pt=table.pt * 1e3).set_index(table.index + 100)

    reco = model.predict(jets_mev)  # the data's units: MeV
    assert list(reco.columns) == ["m", "pt", "phi", "eta"] and reco.index.equals(jets_mev.index)
    got = reco.to_numpy() * [1e-3, 1e-3, 1, 1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    latents = model.predict(jets_mev, mode="encode")
    assert list(latents.columns) == ["latent_0", "latent_1", "latent_2"]
    np.testing.assert_allclose(model.predict(latents, mode="decode"), reco, rtol=1e-6)
    in_gev = model.predict(table[["m", "pt", "phi", "eta"]].to_numpy(), units="GeV")
    np.testing.assert_allclose(in_gev.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="wrong units"):
        model.predict(table, units="MeV")  # GeV numbers read as MeV


def test_regressor_predict_is_the_evaluation_path(checkpoints: dict) -> None:
    model = hepexp.load_model(checkpoints["regressor_flash"])
    dm = model.data_source()
    event_id, event = next(iter(dm.events("test")))
    expected = model.predict_events(dm, "test", max_events=1)[0]
    assert expected["event_id"] == event_id

    out = model.predict(event.hits)
    assert list(out.columns) == ["hit_id", "theta", "sin_phi", "cos_phi", "q", "track_id"]
    np.testing.assert_array_equal(out.hit_id, expected["hit_id"])
    np.testing.assert_allclose(
        out[["theta", "sin_phi", "cos_phi", "q"]].to_numpy(), expected["pred"], atol=1e-5
    )
    params = out[["theta", "sin_phi", "cos_phi", "q"]].to_numpy()
    for clustering in ({}, {"min_cluster_size": 2, "min_samples": 1}):
        labels, _ = model.cluster([params], **clustering)
        sub = submission(out.hit_id.to_numpy(), labels[0])
        tracks = model.predict(event.hits, **clustering).track_id
        np.testing.assert_array_equal(tracks, sub.track_id, err_msg=str(clustering))
    assert 0 <= score_event(event.truth, out) <= 1
    with pytest.raises(TypeError, match="unknown options"):
        model.predict(event.hits, eps=3)


def test_interaction_gnn_predict_is_the_evaluation_path(checkpoints: dict) -> None:
    model = hepexp.load_model(checkpoints["interaction_gnn"])
    dm = model.data_source()
    event_id, event = next(iter(dm.events("test")))
    item = dm.dataset("test")[0]
    assert item["event_id"] == event_id
    expected = model.find_tracks({k: torch.as_tensor(v) for k, v in item["nodes"].items()})

    tracks, edges = model.predict(event.hits)
    np.testing.assert_array_equal(tracks.hit_id, event.hits.hit_id)
    np.testing.assert_array_equal(tracks.track_id, expected["labels"] + 1)
    hit_id = item["nodes"]["hit_id"]
    e = expected["edges"].numpy()
    np.testing.assert_array_equal(edges.hit_id_a, hit_id[e[0]])
    np.testing.assert_array_equal(edges.hit_id_b, hit_id[e[1]])
    np.testing.assert_allclose(edges.score, expected["scores"].numpy(), atol=1e-6)
    assert len(edges) > 0 and edges.score.between(0, 1).all()
    assert 0 <= score_event(event.truth, tracks, unassigned=0) <= 1
    with pytest.raises(ValueError, match="trained without cells"):
        model.predict(event.hits, cells=pd.DataFrame({"hit_id": [], "value": []}))


@pytest.mark.parametrize("name", ["vqvae_uncond", "vqvae_cond"])
def test_vqvae_predict_is_the_evaluation_path(checkpoints: dict, name: str) -> None:
    model = hepexp.load_model(checkpoints[name])
    dm = model.data_source()
    with torch.no_grad():
        loader = dm.loader("test", shuffle=False)
        outputs = [model.predict_step(b, i) for i, b in enumerate(loader)]
    expected = pd.DataFrame(
        {
            "hit_id": np.concatenate([o["hit_id"] for o in outputs]),
            "token": np.concatenate([o["tokens"] for o in outputs]),
            "x": np.concatenate([o["reco"][:, 0] for o in outputs]),
        }
    ).set_index("hit_id")
    _, event = next(iter(dm.events("test")))  # whole events: the test split is one event

    tokens = model.predict(event.hits, event.particles, event.truth)
    assert list(tokens.columns) == ["hit_id", "particle_id", "token"]
    assert sorted(tokens.hit_id) == sorted(expected.index), "the hits of the training selection"
    same = tokens.token.to_numpy() == expected.loc[tokens.hit_id, "token"].to_numpy()
    assert same.mean() > 0.99, "the evaluation's tokens (up to float rounding at code borders)"

    decoded = model.predict(tokens, mode="decode")
    assert decoded[["hit_id", "token"]].equals(tokens[["hit_id", "token"]])
    agree = decoded.hit_id[same]
    np.testing.assert_allclose(
        decoded.set_index("hit_id").loc[agree, "x"], expected.loc[agree, "x"], atol=1e-3
    )
    if name == "vqvae_uncond":  # one token, one position
        first = decoded[decoded.token == decoded.token.iloc[0]]
        assert first[["x", "y", "z"]].nunique().max() == 1


def test_om2vec_predict_is_the_evaluation_path(checkpoints: dict) -> None:
    from hepexp.data.prometheus import om_histograms, read_events

    model = hepexp.load_model(checkpoints["om2vec"])
    dm = model.data_source()
    ids, mus = [], []
    with torch.no_grad():
        for batch in dm.loader("test", shuffle=False):
            ids.append(
                torch.stack([batch[k] for k in ("event_index", "string_id", "sensor_id")], 1)
            )
            mus.append(model.encode(batch)[0])
    keys = ["event_index", "string_id", "sensor_id"]
    expected = pd.DataFrame(torch.cat(ids).numpy(), columns=keys)
    expected[[f"latent_{i}" for i in range(8)]] = torch.cat(mus).numpy()
    (source,) = dm.event_files()
    indices = dm.split_events("test")
    events = read_events(source)[indices]

    latents = model.predict(events)
    assert list(latents.columns[:7]) == [*keys, "x", "y", "z", "n_photons"]
    latents["event_index"] = indices[latents.event_index]
    merged = latents.merge(expected, on=keys, suffixes=("", "_eval"))
    assert len(merged) == len(latents) == len(expected)
    for i in range(8):
        np.testing.assert_allclose(merged[f"latent_{i}"], merged[f"latent_{i}_eval"], atol=1e-5)

    # histograms in, the same latents out, sparse or dense
    h = om_histograms(events.photons, model.num_bins, model.max_time)
    dense = np.zeros((len(h["n_photons"]), model.num_bins), np.int64)
    rows = np.repeat(np.arange(len(dense)), np.diff(h["offsets"]))
    dense[rows, h["bin_index"]] = h["bin_count"]
    for data in (h, dense):
        again = model.predict(data)
        np.testing.assert_allclose(again.filter(like="latent_"), latents.filter(like="latent_"))

    probs = model.predict(latents, mode="decode")
    assert probs.shape == (len(latents), model.num_bins)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    expected_probs = model.decoder.probs(torch.tensor(latents.filter(like="latent_").to_numpy()))
    np.testing.assert_allclose(probs, expected_probs.detach().numpy(), atol=1e-6)
