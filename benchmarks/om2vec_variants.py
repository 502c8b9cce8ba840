"""om2vec design variants trained side by side for the same number of steps.

Simulates ``--events`` default events (train/val by event, as data=prometheus), loads up to
``--train-oms`` training OMs into memory and trains each variant for ``--steps`` steps (batch
256, AdamW, one-cycle learning rate peaking at ``--lr``, gradient norm clipped at 1), then
reports the mean per-OM Jensen-Shannon distance on held-out simulated OMs and on the 2,136 OMs
of the real example file (when ``../shared`` is there), overall and by photons per OM.

Variants: ``exact`` (default model: first-hit anchored latent holding the first latent / 4
non-empty bins exactly), ``relative`` (first-hit anchored, every other dimension learned),
``absolute`` (the same networks on absolute bins), and optionally other latent sizes
(``--latents``).

    python benchmarks/om2vec_variants.py [--steps 2000] [--events 2000] [--variants exact relative absolute]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hepexp.data.prometheus.datamodule import OMTimingBatch, PrometheusDataModule, densify_batch
from hepexp.metrics.timing import PHOTON_CLASSES, js_distance
from hepexp.models.om2vec import Om2Vec, SoftmaxDecoder, SparseEncoder


def load(dm: PrometheusDataModule, split: str, n: int) -> dict[str, torch.Tensor]:
    table = pa.concat_tables([pq.read_table(f) for f in dm.split_files(split)])
    return OMTimingBatch(dm.num_bins)(table.slice(0, n))


def take(b: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    """The OMs ``idx`` of an in-memory CSR batch."""
    idx = torch.as_tensor(idx)
    n = b["offsets"].diff()[idx]
    offsets = torch.zeros(len(idx) + 1, dtype=torch.long)
    offsets[1:] = n.cumsum(0)
    rows = torch.repeat_interleave(torch.arange(len(idx)), n)
    pos = b["offsets"][idx][rows] + torch.arange(int(offsets[-1])) - offsets[rows]
    out = {k: v[idx] for k, v in b.items() if k not in ("offsets", "bin_index", "bin_count")}
    out.update(offsets=offsets, bin_index=b["bin_index"][pos], bin_count=b["bin_count"][pos])
    return out


@torch.no_grad()
def js_by_class(model: Om2Vec, data: dict[str, torch.Tensor]) -> list[float]:
    model.eval()
    js, n = [], []
    total = len(data["offsets"]) - 1
    for s in range(0, total, 500):
        b = take(data, range(s, min(total, s + 500)))
        js.append(js_distance(densify_batch(b, 6400), model.reconstruct(b)).numpy())
        n.append(b["n_photons"].numpy())
    model.train()
    js, n = np.concatenate(js), np.concatenate(n)
    return [float(js.mean())] + [
        float(js[(n >= lo) & (n <= hi)].mean()) for lo, hi in PHOTON_CLASSES
    ]


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--train-oms", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--variants", nargs="+", default=["exact", "relative", "absolute"])
    parser.add_argument("--latents", type=int, nargs="+", default=[64])
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("HEPEXP_SHARED", here.parent / "shared"))
    )
    args = parser.parse_args()
    real_file = args.shared / "data" / "prometheus" / "example_photons.parquet"
    with tempfile.TemporaryDirectory() as tmp:
        dm = PrometheusDataModule(data_dir=tmp, simulation={"n_events": args.events})
        train, val = load(dm, "train", args.train_oms), load(dm, "val", 3000)
        real = None
        if real_file.exists():
            rdm = PrometheusDataModule(data_dir=tmp, source=str(real_file), splits="test")
            real = load(rdm, "test", 10_000)
    n_train = len(train["offsets"]) - 1
    print(f"{n_train} training OMs from {args.events} simulated events; {args.steps} steps of 256")
    header = "mean     1    2-10  11-100  >100"
    print(f"\n{'variant':<18s} {'OMs/s':>7s} | sim val: {header} | real: {header}")
    for variant in args.variants:
        for latent in args.latents:
            torch.manual_seed(0)
            relative = variant != "absolute"
            k = latent // 4 if variant == "exact" else 0
            enc = SparseEncoder(latent, 6400, relative=relative, exact_bins=k)
            dec = SoftmaxDecoder(latent, 6400, relative=relative, exact_bins=k)
            model = Om2Vec(enc, dec, latent_dim=latent, beta_warmup_steps=args.steps // 4)
            opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
            )
            gen = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                batch = take(train, torch.randint(0, n_train, (256,), generator=gen))
                loss = model.losses(batch)["loss"]
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
            rate = args.steps * 256 / (time.perf_counter() - t0)
            fmt = lambda v: " ".join(f"{x:5.3f}" for x in v)  # noqa: E731
            line = f"{variant + f' L{latent}':<18s} {rate:7,.0f} | sim val: {fmt(js_by_class(model, val))}"
            if real is not None:
                line += f" | real: {fmt(js_by_class(model, real))}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
