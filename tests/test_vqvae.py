"""vqvae_cond / vqvae_uncond: masking, determinism, metrics, and train -> evaluate -> convert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hepexp.checkpoint import CHECKPOINT_KEY
from hepexp.data.trackml.io import load_event
from hepexp.errors import DataError
from hepexp.metrics import vqvae as vqm
from hepexp.models.vqvae import HitVQVAE, TrackVQVAE, hit_features, read_tokens, write_parquet
from hepexp.run.convert import convert
from hepexp.run.evaluate import evaluate
from hepexp.run.train import train

from .conftest import SHARED, compose_config, require

TINY_MODEL = {"num_codes": 64, "dim": 4, "restart_after": 5, "kmeans_init": True}


def _tracks(n: int = 12, length: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, 3, generator=g)
    lengths = torch.randint(3, length - 4, (n,), generator=g)
    mask = torch.arange(length)[None] < lengths[:, None]
    x[~mask] = 0.0
    return x, mask


def _cond(**kwargs) -> TrackVQVAE:
    torch.manual_seed(0)
    options = dict(d_model=16, heads=2, ffn=32, layers=2, dropout=0.0, quantizer=TINY_MODEL)
    options.update(kwargs)
    return TrackVQVAE(**options)


@pytest.mark.parametrize("positional", [False, True])
def test_cond_padding_content_and_length_do_not_change_tokens(positional: bool) -> None:
    model = _cond(
        positional=positional,
        max_len=32,
        cylindrical_features=positional,
        polar_output=positional,
        anchor=[8] if positional else None,
        anchor_input=positional,
    )
    x, mask = _tracks()
    model.init_codebook([{"x": x, "mask": mask}])
    model.eval()
    tokens = model.tokenize(x, mask)
    assert ((tokens >= 0) == mask).all() and (tokens[~mask] == -1).all()
    garbage = x.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), 3) * 1e3
    assert torch.equal(model.tokenize(garbage, mask), tokens)
    # more padding columns: the same tokens
    longer = torch.cat([garbage, torch.full((len(x), 8, 3), 7.0)], 1)
    longer_mask = torch.cat([mask, torch.zeros(len(x), 8, dtype=torch.bool)], 1)
    assert torch.equal(model.tokenize(longer, longer_mask)[:, : x.shape[1]], tokens)
    # reconstruction of real hits does not see padding either, also in training mode
    model.train()
    reco1 = model.hits_forward({"x": x, "mask": mask})["reco"]
    reco2 = model.hits_forward({"x": longer, "mask": longer_mask})["reco"]
    torch.testing.assert_close(reco1, reco2)
    # one track alone gets the tokens it gets in a batch
    model.eval()
    one = model.tokenize(x[3:4], mask[3:4])
    assert torch.equal(one[0], tokens[3])


def test_anchor_input_needs_an_anchor() -> None:
    with pytest.raises(ValueError, match="anchor_input needs an anchor"):
        _cond(anchor_input=True)


def test_init_from_restores_the_codebook_so_kmeans_is_not_rerun(tmp_path: Path) -> None:
    """(model.init_from itself is tested in test_base_module.py)"""
    trained = _cond()
    with torch.no_grad():
        trained.quantizer.codebook.add_(1.0)
    trained.quantizer.initialised.fill_(True)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": trained.state_dict(), CHECKPOINT_KEY: {"config": {}}}, ckpt)
    fresh = _cond(init_from=str(ckpt))
    assert fresh.quantizer.needs_init
    fresh.setup("fit")
    assert torch.equal(fresh.quantizer.codebook, trained.quantizer.codebook)
    assert not fresh.quantizer.needs_init


def test_cond_token_depends_on_the_whole_track() -> None:
    model = _cond()
    x, mask = _tracks()
    model.eval()
    z1 = model.encode(x, mask)
    moved = x.clone()
    moved[0, 1] += 0.5  # move one hit of track 0
    z2 = model.encode(moved, mask)
    assert not torch.allclose(z1[0, 0], z2[0, 0]), "hit 0's latent depends on hit 1"
    torch.testing.assert_close(z1[1:], z2[1:])  # other tracks are untouched


def test_uncond_same_hit_same_token_whatever_the_batch() -> None:
    torch.manual_seed(0)
    model = HitVQVAE(hidden=(16, 16), quantizer=TINY_MODEL)
    hits = torch.randn(300, 3)
    model.init_codebook([{"x": hits}])
    for _ in range(3):  # a few training steps move BatchNorm statistics away from the defaults
        model.hits_forward({"x": torch.randn(64, 3)})
    model.eval()
    tokens = model.tokenize(hits)
    perm = torch.randperm(300)
    assert torch.equal(model.tokenize(hits[perm]), tokens[perm])
    assert torch.equal(model.tokenize(hits[7:8]), tokens[7:8])
    mixed = torch.cat([torch.randn(50, 3), hits[:10]])
    assert torch.equal(model.tokenize(mixed)[50:], tokens[:10])
    decoded = model.detokenize(tokens)
    assert torch.equal(
        decoded[tokens == tokens[0]], decoded[0].expand(int((tokens == tokens[0]).sum()), 3)
    )


def test_polar_output_and_cylindrical_features() -> None:
    model = HitVQVAE(hidden=(8,), quantizer=TINY_MODEL, polar_output=True)
    out = torch.tensor([[2.0, 0.0, 3.0, 5.0], [1.0, -4.0, 0.0, -1.0]])
    torch.testing.assert_close(model.positions_of(out), torch.tensor([[0.0, 2, 5], [-1, 0, -1]]))
    assert model.detokenize(torch.tensor([0, 1])).shape == (2, 3)
    x = torch.tensor([[3.0, 4.0, 1.0]])
    torch.testing.assert_close(hit_features(x, True), torch.tensor([[3.0, 4, 1, 5, 0.6, 0.8]]))
    assert torch.equal(hit_features(x, False), x)


def test_kmeans_init_spreads_codes_over_latents() -> None:
    model = _cond()
    x, mask = _tracks(40)
    assert model.quantizer.needs_init
    n = model.init_codebook([{"x": x, "mask": mask}])
    assert n == int(mask.sum()) and not model.quantizer.needs_init
    model.eval()
    tokens = model.tokenize(x, mask)
    used = len(torch.unique(tokens[tokens >= 0]))
    assert used > 0.8 * TINY_MODEL["num_codes"], "k-means codes sit on the encoder outputs"


def test_error_metrics_by_hand() -> None:
    true = np.zeros((4, 3))
    reco = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 30.0], [0.0, 0.0, 0.0], [0.0, 200.0, 0.0]])
    err = vqm.hit_errors(true, reco)
    np.testing.assert_allclose(err, [5, 30, 0, 200])
    m = vqm.error_summary(err)
    assert m["within_25mm"] == 0.5
    assert m["median_error_mm"] == 17.5 and m["mean_error_mm"] == pytest.approx(58.75)
    # (1/150) * integral_0^150 CDF = mean(max(150 - e, 0)) / 150
    assert m["auc_0_150mm"] == pytest.approx((145 + 120 + 150 + 0) / 4 / 150)
    cdf = vqm.error_cdf(err, grid=np.array([0.0, 5.0, 100.0, 250.0]))
    assert cdf.cdf.tolist() == [0.25, 0.5, 0.75, 1.0]
    # the AUC from a fine CDF grid agrees with the exact formula
    fine = vqm.error_cdf(err, grid=np.linspace(0, 150, 150001))
    assert np.trapezoid(fine.cdf, fine.error_mm) / 150 == pytest.approx(m["auc_0_150mm"], abs=1e-4)
    by_r = vqm.per_radius(err, np.array([30.0, 30.0, 500.0, 1000.0]))
    assert by_r.n_hits.tolist() == [2, 1, 1] and by_r.within_25mm.tolist() == [0.5, 1.0, 0.0]


def test_read_tokens_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"event_id": [1], "token": [99]}), path)
    with pytest.raises(DataError, match="token.*in \\[0, 64\\)"):
        read_tokens(path, 64)
    write_parquet(pd.DataFrame({"event_id": [1], "tok": [9]}), path)
    with pytest.raises(DataError, match="'token'"):
        read_tokens(path, 64)
    write_parquet(pd.DataFrame({"token": [1.5]}), path)
    with pytest.raises(DataError, match="integer tokens"):
        read_tokens(path, 64)


# -- train -> evaluate -> convert on tiny simulated events ------------------------------------------
# (the models bring the original's data settings: whole events, barrel, tracks with >= 6 hits)
BARREL = [
    "data.simulation.n_events=3",
    "data.simulation.n_particles=250",
    "data.splits={train:1,val:1,test:1}",
    "model.quantizer.num_codes=256",
    "model.kmeans_iters=5",
    "trainer.accelerator=cpu",
    "logger=csv",
]
MODELS = {
    "vqvae_uncond": [
        "trainer.max_epochs=8",
        "data.batch_size=256",
        "model.optimizer.lr=3e-3",
        "model.quantizer.restart_after=5",
    ],
    "vqvae_cond": [
        "trainer.max_epochs=10",
        "data.batch_size=8",
        "model.d_model=32",
        "model.ffn=64",
        "model.layers=1",
        "model.optimizer.lr=3e-3",
    ],
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One torch thread in this module: the tiny runs train faster than on two shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(MODELS))
def tiny_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained tiny tokenizer, its evaluation on the test split and its token files."""
    model = request.param
    root = tmp_path_factory.mktemp(model)
    cfg = compose_config(
        root / "train", [f"model={model}", "data=trackml", *BARREL, *MODELS[model]]
    )
    run = Path(cfg.paths.output_dir)
    train(cfg)
    ckpt = run / "checkpoints" / "best.ckpt"
    eval_cfg = compose_config(root / "eval", [f"ckpt_path={ckpt}"], config_name="evaluate")
    metrics = evaluate(eval_cfg)
    eval_dir = Path(eval_cfg.paths.output_dir)  # resolve now: the next configs change it
    events = next((root / "train" / "data" / "trackml" / "simulated").iterdir())
    tokens, decoded = root / "tokens.parquet", root / "decoded.parquet"
    conv = [f"ckpt_path={ckpt}", f"input={events}", f"output={tokens}"]
    summary = convert(compose_config(root / "conv", conv, config_name="convert"))
    conv = [f"ckpt_path={ckpt}", f"input={tokens}", f"output={decoded}", "mode=decode"]
    convert(compose_config(root / "conv2", conv, config_name="convert"))
    return {
        "model": model,
        "run": run,
        "eval_dir": eval_dir,
        "metrics": metrics,
        "events": events,
        "summary": summary,
        "tokens": tokens,
        "decoded": decoded,
    }


@pytest.mark.slow
def test_training_learns_and_logs_codebook_use(tiny_run: dict) -> None:
    log = pd.read_csv(tiny_run["run"] / "csv" / "metrics.csv")
    for key in ("train/utilisation", "train/perplexity", "val/utilisation", "val/within_25mm"):
        assert log[key].notna().sum() >= 3, f"{key} logged every epoch"
    val = log["val/mean_error_mm"].dropna().to_numpy()
    assert val[-1] < 0.6 * val[0], "the reconstruction improves"
    assert log["train/utilisation"].dropna().iloc[-1] > 0.5


@pytest.mark.slow
def test_evaluation_outputs(tiny_run: dict) -> None:
    m, out = tiny_run["metrics"], tiny_run["eval_dir"]
    assert m["n_hits"] > 500 and 0 < m["utilisation"] <= 1 and m["perplexity"] > 10
    assert 0 < m["within_25mm"] < 1 and 0 < m["auc_0_150mm"] < 1
    # measured, uncond / cond trained 0.32 / 0.38, untrained (lr 0) 0.09 / 0.03
    assert m["auc_0_150mm"] > 0.25
    assert (
        m["pixel_barrel/n_hits"] + m["short_strip_barrel/n_hits"] + m["long_strip_barrel/n_hits"]
        == m["n_hits"]
    )
    for plot in ("error_cdf", "token_frequency", "error_vs_radius"):
        for suffix in (".png", ".pdf"):
            assert (out / (plot + suffix)).stat().st_size > 5000, plot + suffix
    cdf = pd.read_csv(out / "error_cdf.csv")
    assert cdf.cdf.is_monotonic_increasing
    at25 = cdf.cdf[cdf.error_mm < 25].iloc[-1]
    assert at25 == pytest.approx(m["within_25mm"], abs=0.01)
    assert np.load(out / "token_counts.npy").sum() == m["n_hits"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["within_25mm"] == m["within_25mm"]


@pytest.mark.slow
def test_convert_tokens_and_back(tiny_run: dict) -> None:
    tokens = pd.read_parquet(tiny_run["tokens"])
    assert list(tokens.columns) == ["event_id", "hit_id", "particle_id", "token"]
    assert tokens.event_id.unique().tolist() == [1, 2, 3]
    assert (tokens.particle_id != 0).all(), "noise is not tokenized"
    summary = tiny_run["summary"]
    assert summary["n_tokens"] == len(tokens)
    assert summary["n_hits_without_token"] == summary["n_hits"] - len(tokens) > 0
    # event 3 is the test split: the same hits as the evaluation, the same errors
    hits, truth = load_event(tiny_run["events"] / "event000000003", ("hits", "truth"))
    decoded = pd.read_parquet(tiny_run["decoded"])
    assert decoded.token.equals(tokens.token)
    test = decoded[decoded.event_id == 3]
    assert len(test) == tiny_run["metrics"]["n_hits"]
    assert (hits.set_index("hit_id").loc[test.hit_id, "volume_id"].isin([8, 13, 17])).all()
    true = hits.set_index("hit_id").loc[test.hit_id, ["x", "y", "z"]].to_numpy()
    err = vqm.hit_errors(true, test[["x", "y", "z"]].to_numpy())
    assert (err < 25).mean() == pytest.approx(tiny_run["metrics"]["within_25mm"], abs=2e-3)
    assert err.mean() == pytest.approx(tiny_run["metrics"]["mean_error_mm"], rel=1e-3)
    constant_guess = vqm.hit_errors(true, np.broadcast_to(true.mean(0), true.shape)).mean()
    assert err.mean() < 0.5 * constant_guess, "trained: far better than a constant guess"
    assert not list(tiny_run["tokens"].parent.glob("*.tmp"))


@pytest.mark.slow
def test_evaluate_on_the_real_event(tiny_run: dict, tmp_path: Path) -> None:
    real = SHARED / "data" / "trackml"
    require((real / "event000000001-hits.csv.gz").exists(), f"{real} holds no real TrackML event")
    ckpt = tiny_run["run"] / "checkpoints" / "best.ckpt"
    cfg = compose_config(
        tmp_path,
        [f"ckpt_path={ckpt}", f"data.source={real}", "+data.splits={train:0,val:0,test:1}"],
        config_name="evaluate",
    )
    metrics = evaluate(cfg)
    # the real 5% event has 2035 barrel hits on 208 particles with >= 6 barrel hits
    assert metrics["n_hits"] == 2035
    # trained on simulation, it reconstructs real hits too (measured, uncond / cond: trained
    # 0.35 / 0.42 and 142 / 116 mm, untrained (lr 0) 0.10 / 0.03 and 452 / 490 mm)
    assert metrics["auc_0_150mm"] > 0.25
    assert metrics["mean_error_mm"] < 250
