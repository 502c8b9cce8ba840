"""Training and inference throughput (jets/s) of model=jet_ae for several batch sizes.

    python benchmarks/jet_ae_throughput.py [--device cuda] [--batch-sizes 256 1024 4096]

Runs the real JetAutoencoder training step (normalisation, forward, MSE, backward, Adam) on
simulated jets, each variant for the same number of seconds, and prints jets/s side by side
with the ratio to the first batch size.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hepexp.data.jets import simulate_jets
from hepexp.models.jet_ae import JetAutoencoder

TRANSFORMS = [
    {"name": "m", "fn": "log10", "offset": 1.0, "loc": 0.0, "scale": 1.8},
    {"name": "pt", "fn": "log10", "loc": 1.3, "scale": 1.2},
    {"name": "phi", "scale": 3.0},
    {"name": "eta", "scale": 5.0},
]


def measure(batch_size: int, device: str, seconds: float, jets: torch.Tensor) -> dict:
    model = JetAutoencoder(transforms=TRANSFORMS).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = jets.to(device)
    n = len(data)

    def train_steps(k: int) -> None:
        for _ in range(k):
            idx = torch.randint(0, n, (batch_size,), device=device)
            loss = model._loss(data[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    train_steps(5)
    if device == "cuda":
        torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        train_steps(10)
        steps += 10
    if device == "cuda":
        torch.cuda.synchronize()
    train_rate = steps * batch_size / (time.perf_counter() - start)

    model.eval()
    with torch.no_grad():
        batches, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            for b in data.split(batch_size * 4):
                model.decode(model.encode(b))
            batches += 1
        if device == "cuda":
            torch.cuda.synchronize()
        infer_rate = batches * n / (time.perf_counter() - start)
    return {
        "batch_size": batch_size,
        "train_jets_per_s": train_rate,
        "infer_jets_per_s": infer_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    jets_frame = simulate_jets(100_000, seed=0)
    jets = torch.tensor(
        jets_frame[["m", "pt", "phi", "eta"]].to_numpy() * [1e-3, 1e-3, 1, 1], dtype=torch.float32
    )
    results = [measure(b, args.device, args.seconds, jets) for b in args.batch_sizes]
    base = results[0]
    print(f"device: {args.device} ({torch.get_num_threads()} threads)")
    print(f"{'batch':>7} {'train jets/s':>14} {'ratio':>7} {'infer jets/s':>14} {'ratio':>7}")
    for r in results:
        print(
            f"{r['batch_size']:>7} {r['train_jets_per_s']:>14,.0f} {r['train_jets_per_s'] / base['train_jets_per_s']:>7.2f}"
            f" {r['infer_jets_per_s']:>14,.0f} {r['infer_jets_per_s'] / base['infer_jets_per_s']:>7.2f}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": args.device, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
