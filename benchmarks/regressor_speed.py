"""Training and inference speed of the regressor_flash Transformer, three ways, same run.

- ``one-event``: one event per step with no padding and no mask (the original flash path,
  which could not mask padding), the baseline; on CUDA FlashAttention is forced (SDPA's own
  choice was 5-17x slower for single events of changing length on an H100).
- ``padded``: batches of events padded to the longest, key-padding mask (additive, in the
  activations' dtype) through SDPA's fused kernels.
- ``packed``: the events of a batch packed into one sequence with a block-diagonal mask:
  FlexAttention (compiled) on CUDA, a per-event attention loop on CPU (``--packed-kernel``).

Events have TML:a-b-like sizes: a uniform number of particles in ``--particles`` with ~11 hits
each (random positions: only speed is measured here; the tests check that the layouts agree).
On CUDA the model runs in bf16 autocast (``--dtype``); on CPU in float32. Prints events/s and
the ratio to the baseline.

    python benchmarks/regressor_speed.py                      # CPU, TML:10-50 model
    python benchmarks/regressor_speed.py --device cuda        # GPU, bf16
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hepexp.nn.attention import SetTransformer

#: (input features, SetTransformer sizes): the published models, and the default of train.py
#: (direction features, geometric attention, gated FFN)
PRESETS = {
    "tml10_50": (3, {"dim": 64, "layers": 6, "heads": 8, "ffn": 128}),
    "tml200_500": (3, {"dim": 128, "layers": 7, "heads": 4, "ffn": 256}),
    "default": (
        8,
        {"dim": 64, "layers": 4, "heads": 4, "ffn": 128, "geometry_dims": 4, "ffn_gate": True},
    ),
}


def event_sizes(n: int, particles: tuple[int, int], gen: torch.Generator) -> list[int]:
    k = torch.randint(particles[0], particles[1] + 1, (n,), generator=gen)
    hits = torch.poisson(torch.full((int(k.sum()),), 11.0), generator=gen).clamp(min=3)
    return [int(c.sum()) for c in hits.split(k.tolist())]


def make_batch(
    sizes: list[int], device: str, gen: torch.Generator, features: int = 3
) -> dict[str, torch.Tensor]:
    n = max(sizes)
    x = torch.randn(len(sizes), n, features, generator=gen)
    mask = torch.arange(n)[None] < torch.tensor(sizes)[:, None]
    y = torch.randn(len(sizes), n, 4, generator=gen)
    geo = torch.nn.functional.normalize(torch.randn(len(sizes), n, 4, generator=gen), dim=-1)
    batch = {"x": x, "y": y, "mask": mask, "geo": geo}
    return {k: v.to(device) for k, v in batch.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def geo(batch: dict) -> torch.Tensor:
    """Per-hit direction vectors for geometric attention (ignored by models without it)."""
    return batch["geo"]


def run_variant(
    model: SetTransformer,
    batches: list[dict],
    layout: str,
    kernel: str,
    train: bool,
    dtype: torch.dtype | None,
    device: str,
    warmup: int,
) -> tuple[float, int]:
    """Events/s over ``batches`` (after ``warmup`` untimed batches) and the events timed."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train(train)

    def step(batch: dict) -> None:
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            out = model(
                batch["x"], batch["mask"], layout=layout, packed_kernel=kernel, geometry=geo(batch)
            )
            if train:
                sel = batch["mask"]
                loss = torch.nn.functional.mse_loss(out[sel].float(), batch["y"][sel])
        if train:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    with torch.set_grad_enabled(train):
        for batch in batches[:warmup]:
            step(batch)
        sync(device)
        start = time.perf_counter()
        events = 0
        for batch in batches[warmup:]:
            step(batch)
            events += len(batch["x"])
        sync(device)
    return events / (time.perf_counter() - start), events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tml10_50")
    parser.add_argument("--particles", type=int, nargs=2, default=(10, 50))
    parser.add_argument("--batch", type=int, default=64, help="events per batch")
    parser.add_argument("--events", type=int, default=None, help="timed events per variant")
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    parser.add_argument("--packed-kernel", default="auto", choices=["auto", "flex", "loop"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")

    cuda = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("bf16" if cuda else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[dtype_name]
    n_events = args.events or (4096 if cuda else 256)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    kernel = args.packed_kernel if args.packed_kernel != "auto" else ("flex" if cuda else "loop")

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    features, sizes_cfg = PRESETS[args.preset]
    model = SetTransformer(features, 4, **sizes_cfg).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    sizes = event_sizes(n_events + warmup * args.batch, tuple(args.particles), gen)
    single_warmup = 4 * warmup
    single = [
        make_batch([s], args.device, gen, features) for s in sizes[: n_events // 4 + single_warmup]
    ]
    grouped = [
        make_batch(sizes[i : i + args.batch], args.device, gen, features)
        for i in range(0, len(sizes) - args.batch + 1, args.batch)
    ]

    # the layouts must agree before their speed means anything
    model.eval()
    with torch.no_grad():
        first = grouped[0]
        ref = model(first["x"], first["mask"], layout="padded", geometry=geo(first))
        packed = model(
            first["x"], first["mask"], layout="packed", packed_kernel=kernel, geometry=geo(first)
        )
    err = float((ref - packed).abs().max())
    assert err < 0.1, f"padded and packed outputs differ by {err}"
    if err > 1e-3:
        print(f"warning: padded and packed float32 outputs differ by {err:.1e}")
    if cuda:  # after the float32 check: TF32 errors are amplified by the sharp geometric heads
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    variants = [
        ("one-event", single, "padded", kernel),
        (f"padded x{args.batch}", grouped, "padded", kernel),
        (f"packed x{args.batch} ({kernel})", grouped, "packed", kernel),
    ]
    results = {}
    for mode in ("train", "inference"):
        for name, batches, layout, k in variants:
            w = single_warmup if name == "one-event" else warmup
            # the baseline runs FlashAttention itself (unmasked single events), as the original
            flash = cuda and name == "one-event"
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION) if flash else contextlib.nullcontext():
                rate, n = run_variant(
                    model, batches, layout, k, mode == "train", dtype, args.device, w
                )
            results[(mode, name)] = (rate, n)

    device_name = (
        torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    )
    mean_hits = sum(sizes) / len(sizes)
    print(
        f"regressor_flash speed: preset {args.preset} ({n_params:,} parameters), "
        f"TML:{args.particles[0]}-{args.particles[1]}-like events (mean {mean_hits:.0f} hits), "
        f"{device_name}, {dtype_name}, padded/packed max diff {err:.1e}"
    )
    print(f"{'variant':<24} {'train ev/s':>11} {'ratio':>7} {'infer ev/s':>11} {'ratio':>7}")
    base_t = results[("train", "one-event")][0]
    base_i = results[("inference", "one-event")][0]
    rows = []
    for name, *_ in variants:
        t, i = results[("train", name)][0], results[("inference", name)][0]
        print(f"{name:<24} {t:>11.1f} {t / base_t:>6.1f}x {i:>11.1f} {i / base_i:>6.1f}x")
        rows.append({"variant": name, "train_events_per_s": t, "infer_events_per_s": i,
                     "train_ratio": t / base_t, "infer_ratio": i / base_i})  # fmt: skip
    if args.json:
        from hepexp.utils.io import write_json

        write_json(
            args.json,
            {
                "device": device_name,
                "dtype": dtype_name,
                "preset": args.preset,
                "max_diff": err,
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
