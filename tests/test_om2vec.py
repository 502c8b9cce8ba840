"""model=om2vec: shapes, the Poisson loss, beta schedule, sparse vs dense input, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hepexp.data.prometheus.datamodule import densify_batch
from hepexp.models.om2vec import (
    Om2Vec,
    ReferenceDecoder,
    ReferenceEncoder,
    SoftmaxDecoder,
    SparseEncoder,
)

NUM_BINS = 96


def toy_batch(counts: list[dict[int, int]]) -> dict[str, torch.Tensor]:
    """A CSR batch from {bin: count} dicts, one per OM."""
    offsets, index, count = [0], [], []
    for om in counts:
        for b in sorted(om):
            index.append(b)
            count.append(om[b])
        offsets.append(len(index))
    n = len(counts)
    return {
        "offsets": torch.tensor(offsets),
        "bin_index": torch.tensor(index),
        "bin_count": torch.tensor(count, dtype=torch.float32),
        "n_photons": torch.tensor([sum(om.values()) for om in counts]),
        "pos": torch.zeros(n, 3),
        "string_id": torch.arange(n),
        "sensor_id": torch.ones(n, dtype=torch.int64),
        "event_index": torch.zeros(n, dtype=torch.int64),
    }


BATCH = [{3: 1}, {0: 2, 50: 1, 95: 4}, {10: 1, 11: 1, 12: 7}, {80: 30}]


def sparse_model(latent: int = 8, relative: bool = True, **kwargs) -> Om2Vec:
    enc = SparseEncoder(latent, NUM_BINS, embed_dim=32, hidden=64, relative=relative)
    dec = SoftmaxDecoder(latent, NUM_BINS, hidden=64, rank=32, relative=relative)
    return Om2Vec(enc, dec, latent_dim=latent, num_bins=NUM_BINS, max_time=96.0, **kwargs)


def absolute_model(latent: int = 8, **kwargs) -> Om2Vec:
    return sparse_model(latent, relative=False, **kwargs)


def reference_model(latent: int = 8, **kwargs) -> Om2Vec:
    enc = ReferenceEncoder(latent, NUM_BINS, width=32, stages=(24,), d_model=8, heads=2, ff=16)
    dec = ReferenceDecoder(latent, NUM_BINS, width=32, stages=(24,), d_model=8, heads=2, ff=16)
    return Om2Vec(enc, dec, latent_dim=latent, num_bins=NUM_BINS, max_time=96.0, **kwargs)


@pytest.mark.parametrize("build", [sparse_model, absolute_model, reference_model])
def test_shapes_and_normalised_reconstructions(build):
    torch.manual_seed(0)
    model = build(latent=8).eval()
    batch = toy_batch(BATCH)
    mu, logvar = model.encode(batch)
    assert mu.shape == logvar.shape == (4, 8)
    probs = model.reconstruct(batch)
    assert probs.shape == (4, NUM_BINS)
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5) and (probs >= 0).all()
    rows = torch.repeat_interleave(torch.arange(4), batch["offsets"].diff())
    logp = model.decoder.log_prob(mu, batch)
    assert torch.allclose(logp, probs[rows, batch["bin_index"]].log(), atol=1e-5)


def test_reference_preset_size_matches_the_original():
    for latent in (32, 64, 128):
        model = Om2Vec(ReferenceEncoder(latent, 6400), ReferenceDecoder(latent, 6400), latent)
        n = sum(p.numel() for p in model.parameters())
        assert 14e6 < n < 17e6, (latent, n)  # "~15 M parameters for latent 32/64/128"


def test_sparse_input_equals_dense_input():
    torch.manual_seed(1)
    batch = toy_batch(BATCH)
    dense = dict(batch, counts=densify_batch(batch, NUM_BINS))
    assert dense["counts"][1, 95] == 4 and dense["counts"].sum() == 47
    ref = reference_model().eval()
    assert torch.equal(ref.encode(batch)[0], ref.encode(dense)[0])
    # the bag encoder is the dense Linear(num_bins -> embed) on log(1 + counts), done sparsely
    enc = SparseEncoder(8, NUM_BINS, embed_dim=32, hidden=64)
    bag = enc.bag(
        batch["bin_index"],
        batch["offsets"][:-1],
        per_sample_weights=torch.log1p(batch["bin_count"]),
    )
    assert torch.allclose(bag, torch.log1p(dense["counts"]) @ enc.bag.weight, atol=1e-5)


@pytest.mark.parametrize("norm", ["om", "photon"])
def test_loss_is_the_poisson_nll_with_rate_p_times_photons(norm):
    torch.manual_seed(2)
    model = sparse_model(loss_norm=norm, beta=0.0).eval()
    batch = toy_batch(BATCH)
    out = model.losses(batch, sample=False)
    probs = model.reconstruct(batch).double()
    counts = densify_batch(batch, NUM_BINS).double()
    n = counts.sum(1, keepdim=True)
    rate = probs * n
    poisson = (rate - torch.xlogy(counts, rate) + torch.lgamma(counts + 1)).sum(1)  # Poisson NLL
    # the model-independent part: sum_j c_j log n - n + sum_j log c_j!
    const = n.squeeze(1) - n.squeeze(1) * n.squeeze(1).log() + torch.lgamma(counts + 1).sum(1)
    nll = poisson - const
    expected = (nll / n.squeeze(1)).mean() if norm == "om" else nll.sum() / n.sum()
    assert out["recon"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["recon"].item())


def test_kl_and_cosine_beta_schedule():
    model = absolute_model(beta=1e-3, beta_warmup_steps=100)
    steps = {step: model.beta(step) for step in (0, 50, 100, 400)}
    assert (
        steps[0] == 0.0 and steps[50] == pytest.approx(0.5e-3) and steps[100] == steps[400] == 1e-3
    )
    assert model.beta(25) == pytest.approx(1e-3 * 0.5 * (1 - math.cos(math.pi / 4)))
    batch = toy_batch(BATCH)
    mu, logvar = model.encode(batch)
    out = model.losses(batch, sample=False)
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert model.beta() == 0.0 and out["loss"] == out["recon"]  # step 0 (no trainer)
    model = absolute_model(beta=1e-3, beta_schedule="constant")
    out = model.losses(batch, sample=False)
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 1e-3 * out["kl"].item())
    with pytest.raises(ValueError, match="beta_schedule"):
        absolute_model(beta_schedule="exp")
    with pytest.raises(ValueError, match="loss_norm"):
        absolute_model(loss_norm="bin")


@pytest.mark.parametrize("build", [sparse_model, absolute_model, reference_model])
def test_learns_to_reconstruct_a_few_oms(build):
    torch.manual_seed(3)
    model = build(latent=8)
    batch = toy_batch(BATCH)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.losses(batch, sample=False)["recon"].item()
    for _ in range(150):
        loss = model.losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = model.losses(batch, sample=False)["recon"].item()
    assert first > math.log(NUM_BINS) * 0.8 and last < 0.5 * first
    probs = model.eval().reconstruct(batch)
    assert probs[0].argmax() == 3 and probs[3].argmax() == 80


def test_beta_is_zero_at_the_first_step_with_a_trainer_free_module():
    model = sparse_model()
    assert model.beta() == 0.0
    assert np.isfinite(model.losses(toy_batch(BATCH))["loss"].item())


def test_relative_latent_carries_the_first_bin_and_folds_late_offsets():
    torch.manual_seed(4)
    model = sparse_model(latent=8).eval()
    batch = toy_batch(BATCH)
    mu, logvar = model.encode(batch)
    assert model.n_fixed == 1
    assert mu[:, 0].tolist() == pytest.approx([3 / 96, 0.0, 10 / 96, 80 / 96])
    z = model.sample(mu, torch.zeros_like(logvar))  # unit noise in the learned dimensions only
    assert torch.equal(z[:, 0], mu[:, 0]) and not torch.equal(z[:, 1:], mu[:, 1:])
    probs = model.decoder.probs(mu)
    assert (probs[2, :10] == 0).all() and (probs[3, :80] == 0).all()  # nothing before the first hit
    q = torch.softmax(model.decoder.logits(mu), -1)
    assert probs[3, 95].item() == pytest.approx(
        q[3, 15:].sum().item(), rel=1e-5
    )  # late -> last bin
    assert probs[3, 85].item() == pytest.approx(q[3, 5].item(), rel=1e-6)
    # the KL term ignores the deterministic coordinate
    out = model.losses(batch, sample=False)
    learned_mu, learned_lv = mu[:, 1:], logvar[:, 1:]
    kl = (-0.5 * (1 + learned_lv - learned_mu**2 - learned_lv.exp()).sum(1)).mean()
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-5)


@pytest.mark.parametrize(("trainer_clip", "expected"), [(None, 0.5), (2.0, 2.0)])
def test_gradient_norm_is_clipped_unless_the_trainer_clips(trainer_clip, expected):
    import pytorch_lightning as pl

    torch.manual_seed(5)
    model = sparse_model(grad_clip=0.5)
    seen = []
    original = model.clip_gradients

    def record(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        seen.append((gradient_clip_val, gradient_clip_algorithm))
        original(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
        )
        assert norm <= gradient_clip_val * 1.001

    model.clip_gradients = record
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=trainer_clip,
    )
    loader = torch.utils.data.DataLoader([toy_batch(BATCH)], batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    assert seen == [(expected, "norm")]


def test_first_bin_stays_exact_under_bf16_autocast():
    torch.manual_seed(6)
    enc = SparseEncoder(8, 6400, embed_dim=32, hidden=64)
    dec = SoftmaxDecoder(8, 6400, hidden=64, rank=32)
    model = Om2Vec(enc, dec, latent_dim=8).eval()
    batch = toy_batch([{6397: 1, 6399: 2}, {4097: 3}, {1: 1}])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mu, _ = model.encode(batch)
        probs = model.decoder.probs(mu)
    assert mu.dtype == torch.float32
    assert (mu[:, 0] * 6400).tolist() == [6397.0, 4097.0, 1.0]
    assert probs[0, :6397].sum() == 0 and probs[1, :4097].sum() == 0
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-3)


def exact_model(latent: int = 12, k: int = 3) -> Om2Vec:
    enc = SparseEncoder(latent, NUM_BINS, embed_dim=32, hidden=64, exact_bins=k)
    dec = SoftmaxDecoder(latent, NUM_BINS, hidden=64, rank=32, exact_bins=k)
    return Om2Vec(enc, dec, latent_dim=latent, num_bins=NUM_BINS, max_time=96.0)


def test_exact_bins_reconstruct_sparse_oms_exactly_and_mix_in_the_rest():
    torch.manual_seed(7)
    model = exact_model(k=3).eval()
    # unsorted bins within an OM are handled; the 4th OM has more than k non-empty bins
    batch = toy_batch(
        [{3: 1}, {0: 2, 50: 1, 95: 4}, {10: 1, 11: 1, 12: 7}, {5: 1, 7: 1, 9: 2, 90: 4}]
    )
    batch["bin_index"][4:7] = torch.tensor([12, 10, 11])
    batch["bin_count"][4:7] = torch.tensor([7.0, 1.0, 1.0])
    mu, logvar = model.encode(batch)
    assert model.n_fixed == 6
    assert (mu[:, :3] * 96).round().tolist() == [[3, 0, 0], [0, 50, 95], [10, 1, 2], [5, 2, 4]]
    frac = [[1, 0, 0], [2 / 7, 1 / 7, 4 / 7], [1 / 9, 1 / 9, 7 / 9], [1 / 8, 1 / 8, 2 / 8]]
    assert torch.allclose(mu[:, 3:6], torch.tensor(frac))
    assert (logvar[:, :6] == 0).all()
    probs = model.decoder.probs(mu)
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    true = densify_batch(batch, NUM_BINS)
    assert torch.allclose(probs[:3], true[:3] / true[:3].sum(1, keepdim=True), atol=1e-6)
    # OM 4: half its photons on the exact bins, the other half spread by the learned softmax
    assert probs[3, 5].item() >= 1 / 8 and probs[3, 9].item() >= 2 / 8
    assert probs[3, :5].sum() == 0 and 0 < probs[3, 90].item() < 0.5
    rows = torch.repeat_interleave(torch.arange(4), batch["offsets"].diff())
    logp = model.decoder.log_prob(mu, batch)
    assert torch.allclose(logp, probs[rows, batch["bin_index"]].log(), atol=1e-5)
    # only the learned part trains; OMs reconstructed exactly give it no gradient
    out = model.losses(batch, sample=True)
    assert np.isfinite(out["loss"].item())
    out["loss"].backward()
    assert model.decoder.out.weight.grad.abs().sum() > 0


def test_exact_bins_must_leave_learned_dimensions():
    with pytest.raises(ValueError, match="exact_bins"):
        SparseEncoder(8, NUM_BINS, exact_bins=4)
    with pytest.raises(ValueError, match="relative"):
        SoftmaxDecoder(8, NUM_BINS, relative=False, exact_bins=2)
