"""om2vec throughput: training and encoding OMs/s of the model variants, as ratios.

Simulates ``--events`` default Prometheus events, pre-processes them (6,400 x 1 ns bins) and
times, on the same batches of ``--batch-size`` OMs:

* the data loader: sparse CSR batches (the default) vs dense (B, 6400) batches;
* training steps (forward, backward, AdamW step) and encoding (posterior means, no grad) of
  ``reference`` (the original dense Transformer VAE, ~15 M parameters) with dense input from
  the loader and with sparse input densified on the device, and of ``sparse`` (the default
  model: bag-of-bins encoder, MLPs, softmax decoder, latent / 4 exact bins) at latent
  32 / 64 / 128;
* the per-OM fitted baseline (16-component asymmetric Gaussian mixture) on the same OMs.

CPU runs in float32; on CUDA the models run under bf16 autocast (``--precision``).

    python benchmarks/om2vec_throughput.py [--device cpu|cuda] [--events 300] [--steps 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from hepexp.data.prometheus.datamodule import PrometheusDataModule, densify_batch
from hepexp.metrics.timing import fit_asymmetric_gmm
from hepexp.models.om2vec import (
    Om2Vec,
    ReferenceDecoder,
    ReferenceEncoder,
    SoftmaxDecoder,
    SparseEncoder,
)
from hepexp.utils.io import write_json


def build(kind: str, latent: int) -> Om2Vec:
    if kind == "reference":
        enc, dec = ReferenceEncoder(latent, 6400), ReferenceDecoder(latent, 6400)
    else:  # the presets om2vec_32 / om2vec / om2vec_128: latent / 4 exact bins
        k = latent // 4
        enc = SparseEncoder(latent, 6400, exact_bins=k)
        dec = SoftmaxDecoder(latent, 6400, exact_bins=k)
    return Om2Vec(enc, dec, latent_dim=latent)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, batches, device, warmup: int = 1) -> float:
    """Seconds per batch of ``fn`` over ``batches`` after ``warmup`` untimed calls."""
    for b in batches[:warmup]:
        fn(b)
    sync(device)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        fn(b)
    sync(device)
    return (time.perf_counter() - t0) / max(len(batches) - warmup, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None, help="bf16 or fp32 (default: bf16 on CUDA)")
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed batches per measurement")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    bf16 = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        dm = PrometheusDataModule(
            data_dir=tmp, simulation={"n_events": args.events}, batch_size=args.batch_size
        )
        dm.setup("fit")
        n_batches = args.steps + 1
        rates = {}
        batches = {}
        for dense in (False, True):  # a full pass over the training split, then keep a few
            dm.dense, dm.datasets = dense, {}
            loader = dm.loader("train", shuffle=False)
            t0 = time.perf_counter()
            n_loaded = sum(len(b["n_photons"]) for b in loader)
            rates[dense] = n_loaded / (time.perf_counter() - t0)
            batches[dense] = [b for _, b in zip(range(n_batches), loader, strict=False)]
    sparse_batches, dense_batches = batches[False], batches[True]
    n_om = sum(len(b["n_photons"]) for b in sparse_batches)
    nnz = sum(len(b["bin_index"]) for b in sparse_batches) / n_om
    print(
        f"device {device} ({'bf16 autocast' if bf16 else 'fp32'}), batches of {args.batch_size} "
        f"OMs from {args.events} simulated events, {nnz:.1f} non-empty bins per OM on average"
    )
    print(
        f"loader ({n_loaded} OMs): sparse {rates[False]:,.0f} OMs/s, dense (B, 6400) "
        f"{rates[True]:,.0f} OMs/s ({rates[False] / rates[True]:.1f}x slower)\n"
    )
    to_dev = lambda bs: [{k: v.to(device) for k, v in b.items()} for b in bs]  # noqa: E731
    sparse_batches, dense_batches = to_dev(sparse_batches), to_dev(dense_batches)

    variants = (
        []
        if args.skip_reference
        else [
            ("reference L64, dense input from loader", "reference", 64, dense_batches),
            ("reference L64, sparse input densified on device", "reference", 64, sparse_batches),
        ]
    )
    variants += [(f"sparse L{n}", "sparse", n, sparse_batches) for n in (32, 64, 128)]
    rows = []
    for name, kind, latent, batches in variants:
        model = build(kind, latent).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step(b, model=model, opt=opt):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model.losses(b)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        @torch.no_grad()
        def encode(b, model=model):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model.encode(b)

        model.train()
        t_train = timed(train_step, batches, device)
        model.eval()
        t_enc = timed(encode, batches, device)
        n_params = sum(p.numel() for p in model.parameters())
        rows.append((name, n_params, args.batch_size / t_train, args.batch_size / t_enc))
        print(
            f"{name:<50s} {n_params / 1e6:5.2f} M params  train {rows[-1][2]:9,.0f} OMs/s  encode {rows[-1][3]:9,.0f} OMs/s",
            flush=True,
        )
    base = rows[0]
    print(f"\nratios to '{base[0]}':")
    for name, _, tr, en in rows:
        print(f"  {name:<50s} train x{tr / base[2]:7.1f}  encode x{en / base[3]:7.1f}")
    # the per-OM fitted baseline (16-component asymmetric Gaussian mixture, CPU) on these OMs
    cpu = [{k: v.cpu().numpy() for k, v in b.items()} for b in sparse_batches]
    offsets = np.concatenate(
        [[0]]
        + [
            b["offsets"][1:] + o
            for b, o in zip(cpu, np.cumsum([0] + [b["offsets"][-1] for b in cpu[:-1]]), strict=True)
        ]
    )
    times = np.concatenate([b["bin_index"] + 0.5 for b in cpu])
    counts = np.concatenate([b["bin_count"] for b in cpu]).astype(np.float64)
    t0 = time.perf_counter()
    fit_asymmetric_gmm(offsets, times, counts, n_components=16)
    fit_rate = (len(offsets) - 1) / (time.perf_counter() - t0)
    enc64 = next(r for r in rows if r[0] == "sparse L64")[3]
    print(
        f"\nAGMM fit (K=16, CPU, {len(offsets) - 1} OMs): {fit_rate:,.0f} OMs/s; "
        f"sparse L64 encoding on {device} is {enc64 / fit_rate:,.0f}x faster"
    )
    if args.json:
        write_json(
            args.json,
            {
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "precision": "bf16" if bf16 else "fp32",
                "batch_size": args.batch_size,
                "rows": [
                    {
                        "variant": name,
                        "parameters": n,
                        "train_oms_per_s": tr,
                        "encode_oms_per_s": en,
                        "train_ratio": tr / base[2],
                        "encode_ratio": en / base[3],
                    }
                    for name, n, tr, en in rows
                ],  # fmt: skip
                "fit_oms_per_s": fit_rate,
            },
        )
    if device.type == "cpu":
        b = sparse_batches[0]
        t = timed(lambda x: densify_batch(x, 6400), sparse_batches, device)
        print(f"\ndensify_batch on {device}: {len(b['n_photons']) / t:,.0f} OMs/s")


if __name__ == "__main__":
    main()
