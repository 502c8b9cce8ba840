"""Training and tokenization throughput (tracks/s) of model=vqvae_cond and vqvae_uncond.

    python benchmarks/vqvae_throughput.py [--device cuda] [--seconds 10] [--out result.json]

Runs the real training step (forward, reconstruction + commitment loss, backward, Adam, EMA
codebook update) on batches of realistic barrel tracks (helices through the barrel layers,
6-16 hits, lengths as in the simulation), each variant for the same number of seconds, and
prints tracks/s with ratios to the first variant of each model. Variants:

- cond, original: post-norm, dropout 0.1, padded to 32 (trim off), fp32;
- cond, ours: pre-norm + position embedding, no dropout, batches cut to their longest track;
- cond, our recipe (experiment=vqvae_cond_tuned): the above plus cylindrical input features,
  polar output head and the Euclidean-distance loss;
- the same in bf16 autocast (CUDA only);
- uncond: per-hit MLP, 1024 hits per step (counted as tracks of 10 hits).
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import numpy as np
import torch

from hepexp.models.vqvae import HitVQVAE, TrackVQVAE
from hepexp.utils.io import write_json

RADII = np.array([32, 72, 116, 172, 260, 360, 500, 660, 820, 1020], float)
SCALE = 200.0


def barrel_tracks(n: int, max_len: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` helices from the origin crossing the barrel layers (2 T), sorted by radius."""
    rng = np.random.default_rng(seed)
    pt = 0.4 + rng.exponential(1.0, n)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    eta = rng.uniform(-1.0, 1.0, n)
    q = rng.choice([-1.0, 1.0], n)
    radius = pt / (0.3 * 2.0) * 1000.0  # mm
    n_layers = rng.integers(6, 11, n)
    r = np.broadcast_to(RADII, (n, len(RADII)))
    # transverse arc: chord r = 2 R sin(s / 2R), position angle phi0 + q s / 2R
    s = 2 * radius[:, None] * np.arcsin(np.clip(r / (2 * radius[:, None]), -1, 1))
    ang = phi0[:, None] + q[:, None] * s / (2 * radius[:, None])
    z = s * np.sinh(eta)[:, None]
    xyz = np.stack([r * np.cos(ang), r * np.sin(ang), z], -1) / SCALE
    x = np.zeros((n, max_len, 3), np.float32)
    mask = np.arange(max_len)[None] < n_layers[:, None]
    x[:, : len(RADII)][mask[:, : len(RADII)]] = xyz[mask[:, : len(RADII)]]
    return torch.from_numpy(x), torch.from_numpy(mask)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(
    model: torch.nn.Module,
    batches: list[dict],
    device: str,
    seconds: float,
    bf16: bool,
    tracks_per_batch: int,
) -> dict:
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step(batch: dict) -> None:
        with autocast:
            out = model.hits_forward(batch)
            loss = model._recon(out["true"].float(), out["reco"].float()) + out["commit"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches[:3]:
        step(b)
    _sync(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(batches[steps % len(batches)])
        steps += 1
    _sync(device)
    train_rate = steps * tracks_per_batch / (time.perf_counter() - start)

    model.eval()
    n, start = 0, time.perf_counter()
    with torch.no_grad(), autocast:
        while time.perf_counter() - start < seconds / 2:
            b = batches[n % len(batches)]
            if isinstance(model, TrackVQVAE):
                model.tokenize(b["x"], b["mask"])
            else:
                model.tokenize(b["x"])
            n += 1
        _sync(device)
    infer_rate = n * tracks_per_batch / (time.perf_counter() - start)
    return {"train_tracks_per_s": train_rate, "tokenize_tracks_per_s": infer_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=128, help="tracks per cond batch")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    bs = args.batch_size
    x, mask = barrel_tracks(bs * 8)
    track_batches = [{"x": x[i : i + bs], "mask": mask[i : i + bs]} for i in range(0, len(x), bs)]
    hits = x[mask]
    hits_per_track = float(mask.sum(1).float().mean())
    hit_bs = 1024
    hit_batches = [{"x": hits[i : i + hit_bs]} for i in range(0, len(hits) - hit_bs + 1, hit_bs)]
    quantizer = {"num_codes": 4096, "dim": 4}
    ours = {"positional": True, "norm_first": True, "dropout": 0.0}
    recipe = {
        **ours,
        "cylindrical_features": True,
        "polar_output": True,
        "recon_loss": "distance",
    }

    class Padded(TrackVQVAE):
        """The original's layout: every batch padded to 32 hits."""

        @staticmethod
        def _trim(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, mask

    variants = [
        ("cond original (padded 32, fp32)", lambda: Padded(quantizer=quantizer), False),
        ("cond ours (trimmed, fp32)", lambda: TrackVQVAE(quantizer=quantizer, **ours), False),
        ("cond recipe (trimmed, fp32)", lambda: TrackVQVAE(quantizer=quantizer, **recipe), False),
    ]
    if args.device == "cuda":
        variants += [
            ("cond original (padded 32, bf16)", lambda: Padded(quantizer=quantizer), True),
            ("cond ours (trimmed, bf16)", lambda: TrackVQVAE(quantizer=quantizer, **ours), True),
            (
                "cond recipe (trimmed, bf16)",
                lambda: TrackVQVAE(quantizer=quantizer, **recipe),
                True,
            ),
        ]
    results = []
    for name, make, bf16 in variants:
        r = measure(make(), track_batches, args.device, args.seconds, bf16, bs)
        results.append({"variant": name, **r})
    uncond = [("uncond (1024 hits/step, fp32)", False)]
    if args.device == "cuda":
        uncond.append(("uncond (1024 hits/step, bf16)", True))
    for name, bf16 in uncond:
        r = measure(
            HitVQVAE(quantizer=quantizer),
            hit_batches,
            args.device,
            args.seconds,
            bf16,
            int(round(hit_bs / hits_per_track)),
        )
        results.append({"variant": name, **r})

    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({threads} threads)"
    print(f"device: {device}; {bs} tracks per cond batch, {hits_per_track:.1f} hits per track")
    print(
        f"{'variant':<34} {'train tracks/s':>15} {'ratio':>6} {'tokenize tracks/s':>18} {'ratio':>6}"
    )
    base = {
        "cond": results[0],
        "uncond": next(r for r in results if r["variant"].startswith("uncond")),
    }
    for r in results:
        b = base["uncond" if r["variant"].startswith("uncond") else "cond"]
        print(
            f"{r['variant']:<34} {r['train_tracks_per_s']:>15,.0f}"
            f" {r['train_tracks_per_s'] / b['train_tracks_per_s']:>6.2f}"
            f" {r['tokenize_tracks_per_s']:>18,.0f}"
            f" {r['tokenize_tracks_per_s'] / b['tokenize_tracks_per_s']:>6.2f}"
        )
    if args.out:
        write_json(args.out, {"device": device, "batch_size": bs, "results": results})


if __name__ == "__main__":
    main()
