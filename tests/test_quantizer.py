"""The EMA vector quantizer: update math, gradients, smoothing, restarts, k-means, DDP."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hepexp.nn.quantizer import CodeUsage, VectorQuantizer, kmeans, nearest_code, usage_stats


def _quantizer(codebook: list[list[float]], **kwargs) -> VectorQuantizer:
    q = VectorQuantizer(num_codes=len(codebook), dim=len(codebook[0]), **kwargs)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor(codebook))
        q.embed_sum.copy_(q.codebook)
    return q


def test_nearest_code_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    z, codes = torch.randn(500, 4, generator=g), torch.randn(64, 4, generator=g)
    expected = torch.cdist(z, codes).argmin(1)
    assert torch.equal(nearest_code(z, codes, chunk=37), expected)


def test_ema_update_follows_the_formula() -> None:
    decay, eps = 0.9, 1e-3
    q = _quantizer([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], decay=decay, eps=eps)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0], [-1.0, -1.0]])
    out = q(z)
    assert out.indices.tolist() == [0, 0, 1, 0]
    # by hand: cluster sizes start at 1, sums at the codes
    counts = np.array([3.0, 1.0, 0.0])
    sums = np.array([[0.0, 0.0], [9.0, 1.0], [0.0, 0.0]])
    size = decay * 1.0 + (1 - decay) * counts
    embed_sum = decay * np.array([[0, 0], [10, 0], [0, 10]]) + (1 - decay) * sums
    total = size.sum()
    smoothed = (size + eps) / (total + 3 * eps) * total
    np.testing.assert_allclose(q.cluster_size.numpy(), size, rtol=1e-6)
    np.testing.assert_allclose(q.codebook.numpy(), embed_sum / smoothed[:, None], rtol=1e-5)
    assert q.unused_steps.tolist() == [0, 0, 1]
    # the output uses the codes from before the update
    np.testing.assert_allclose(out.quantized.detach().numpy(), [[0, 0], [0, 0], [10, 0], [0, 0]])


def test_codes_converge_to_cluster_means() -> None:
    q = _quantizer([[0.0, 0.0], [5.0, 5.0]], decay=0.8)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        z = torch.cat(
            [
                torch.randn(50, 2, generator=g) * 0.1 + 1.0,
                torch.randn(50, 2, generator=g) * 0.1 + 4.0,
            ]
        )
        q(z)
    np.testing.assert_allclose(q.codebook.numpy(), [[1, 1], [4, 4]], atol=0.05)


def test_no_update_in_eval_mode_or_without_grad() -> None:
    q = _quantizer([[0.0], [1.0]])
    before = q.codebook.clone()
    q.eval()
    q(torch.tensor([[0.3], [0.9]]))
    q.train()
    with torch.no_grad():
        q(torch.tensor([[0.3], [0.9]]))
    assert torch.equal(q.codebook, before)


def test_laplace_smoothing_keeps_unused_codes_finite() -> None:
    q = _quantizer([[0.0], [1.0], [2.0]], decay=0.5, eps=1e-5)
    with torch.no_grad():
        q.cluster_size.copy_(torch.tensor([4.0, 4.0, 0.0]))
        q.embed_sum.copy_(torch.tensor([[0.0], [4.0], [0.0]]))
    q(torch.tensor([[0.1], [0.9]]))
    assert torch.isfinite(q.codebook).all()
    size = q.cluster_size.double()
    smoothed = (size + 1e-5) / (size.sum() + 3e-5) * size.sum()
    assert smoothed.sum().item() == pytest.approx(size.sum().item())
    assert q.codebook[2].item() == 0.0  # empty sum / eps-sized count, not NaN


def test_straight_through_gradient_and_commitment() -> None:
    q = _quantizer([[0.0, 0.0], [1.0, 1.0]], commitment=0.0)
    z = torch.tensor([[0.2, 0.1], [0.8, 0.7]], requires_grad=True)
    out = q(z)
    np.testing.assert_allclose(out.quantized.detach().numpy(), [[0, 0], [1, 1]])
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (out.quantized * w).sum().backward()
    assert torch.equal(z.grad, w), "the gradient passes the quantizer unchanged"

    q = _quantizer([[0.0, 0.0], [1.0, 1.0]], commitment=0.5)
    q.eval()
    z = torch.tensor([[0.2, 0.1], [0.8, 0.7]], requires_grad=True)
    out = q(z)
    code = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert out.loss.item() == pytest.approx(0.5 * ((z - code) ** 2).mean().item())
    out.loss.backward()
    np.testing.assert_allclose(z.grad.numpy(), (0.5 * 2 * (z - code) / 4).detach().numpy())


def test_restarts_revive_dead_codes() -> None:
    torch.manual_seed(0)
    far = [[100.0 + i, 100.0] for i in range(7)]
    q = _quantizer([[0.0, 0.0], *far], restart_after=3)
    g = torch.Generator().manual_seed(2)
    data = lambda: torch.randn(64, 2, generator=g)  # noqa: E731
    usage = CodeUsage(8)
    for _ in range(2):
        usage.update(q(data()).indices)
    assert usage.compute()["utilisation"] == 1 / 8
    assert q.restarts == 0
    batch = data()
    q(batch)  # third step without use: the 7 far codes restart onto this batch
    assert q.pop_restarts() == 7 and q.restarts == 0
    moved = q.codebook[1:]
    assert (moved.norm(dim=1) < 10).all()
    assert all((batch == row).all(1).any() for row in moved), "new codes are encoder outputs"
    assert q.unused_steps.tolist() == [0] * 8
    usage.reset()
    for _ in range(5):
        usage.update(q(data()).indices)
    assert usage.compute()["utilisation"] == 1.0


def test_without_restarts_dead_codes_stay_dead() -> None:
    q = _quantizer([[0.0, 0.0], [100.0, 100.0]], restart_after=None)
    for _ in range(20):
        q(torch.randn(32, 2))
    assert q.codebook[1].norm() > 50 and q.restarts == 0


def test_usage_stats() -> None:
    assert usage_stats(torch.tensor([5, 5, 0, 0])) == {
        "utilisation": 0.5,
        "perplexity": pytest.approx(2.0),
        "tokens": 10,
    }
    uniform = usage_stats(torch.full((64,), 3))
    assert uniform["utilisation"] == 1.0 and uniform["perplexity"] == pytest.approx(64.0)
    skewed = usage_stats(torch.tensor([97, 1, 1, 1]))
    assert 1.0 < skewed["perplexity"] < 1.3
    usage = CodeUsage(4)
    usage.update(torch.tensor([0, 1]))
    usage.update(torch.tensor([[1, 1]]))
    assert usage.counts.tolist() == [1, 3, 0, 0]
    assert usage.compute()["utilisation"] == 0.5


def test_kmeans_init_finds_clusters() -> None:
    g = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    samples = (centres[:, None] + 0.1 * torch.randn(4, 200, 2, generator=g)).reshape(-1, 2)
    found, counts = kmeans(samples, 4, iters=15, generator=torch.Generator().manual_seed(0))
    assert counts.sum() == 800
    dist_to_true = torch.cdist(found, centres).min(1).values
    assert (dist_to_true < 0.1).all()
    q = VectorQuantizer(num_codes=4, dim=2, kmeans_init=True)
    assert q.needs_init
    q.init_codebook(samples, iters=15, generator=torch.Generator().manual_seed(0))
    assert not q.needs_init
    assert torch.cdist(q.codebook, centres).min(1).values.max() < 0.1
    # more codes than samples: every code sits on the data (duplicates are left to restarts)
    few, _ = kmeans(samples[:10], 16, iters=3)
    assert torch.cdist(few, samples[:10]).min(1).values.max() < 1e-3


# -- DDP: statistics all-reduced over ranks -------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _halves() -> torch.Tensor:
    g = torch.Generator().manual_seed(10)
    centres = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    return (torch.randn(2, 40, 2, generator=g) + centres[:, None]).reshape(-1, 2)


CODES = [[0.0, 0.0], [3.0, 3.0], [50.0, 50.0]]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)  # restart draws would differ per rank unless broadcast
        z = _halves()[rank * 40 : (rank + 1) * 40]
        plain = _quantizer(CODES, decay=0.9)
        restarting = _quantizer(CODES, decay=0.9, restart_after=2)
        for _ in range(3):
            plain(z)
            restarting(z)
        torch.save(
            {"plain": plain.codebook, "size": plain.cluster_size, "restart": restarting.codebook},
            Path(out_dir) / f"{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_ddp_all_reduces_statistics(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    # each rank saw half of the data; the update equals one process seeing all of it
    single = _quantizer(CODES, decay=0.9)
    for _ in range(3):
        single(_halves())
    for r in (r0, r1):
        np.testing.assert_allclose(r["plain"].numpy(), single.codebook.numpy(), rtol=1e-5)
        np.testing.assert_allclose(r["size"].numpy(), single.cluster_size.numpy(), rtol=1e-5)
    assert torch.equal(r0["restart"], r1["restart"]), "restarts are identical on all ranks"
    assert r0["restart"][2].norm() < 10, "the dead code was restarted onto the data"
