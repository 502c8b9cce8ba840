"""Graph construction vs event size: the layer-pair map against the module map.

The layer-pair map (windows for pT >= ``--lp-pt-min``) is fitted on ``--lp-train-events``
events of 500 primaries, as in ``gnn_graph_construction.py``; the module map on
``--train-events`` events of ``--train-particles`` primaries (simulated once and kept as
``.npz`` under ``--cache`` when given). Both are applied to ``--events`` fresh events of each
size in ``--sizes`` (seeds 3, 4, ...; seeds 1 and 2 were the validation events on which the
module map's defaults were chosen) on one CPU thread (``--threads``); the table gives edges
per hit, the truth-edge efficiency for particles with pT > 1 and > 0.5 GeV, the purity
(edges joining consecutive hits of one particle) and seconds per event, with the module map's
edges per hit and seconds as ratios to the layer-pair map's. The layer-pair map is skipped above
``--lp-max-size`` primaries (minutes per event at full size). A last row (primaries 0) gives
the real TrackML event ``--real`` when present.

    python benchmarks/graph_construction.py --cache /tmp/graph_events
    python benchmarks/graph_construction.py --sizes 200 1000 --train-events 20 --lp-max-size 1000
    python benchmarks/graph_construction.py --cache /tmp/graph_events --events 2 --first-seed 1 \
        --sizes 10000 --real '' --map-settings '{"pt_min": 0.5}'   # a setting, on validation events
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hepexp.data.trackml.datamodule import _graph_record
from hepexp.data.trackml.io import load_event
from hepexp.data.trackml.simulate import simulate_event
from hepexp.data.trackml.subevents import SubEvent
from hepexp.reco.graph_building import LayerPairMap, edge_metrics, edge_ratios
from hepexp.reco.module_map import ModuleMap, module_key

KEYS = ("x", "volume_id", "layer_id", "module_id", "particle_id", "pt", "truth_edges")


def graph_record(n_particles: int, seed: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """The ``graph`` view arrays of one simulated event (with noise), cached as .npz."""
    path = cache / f"ev{n_particles}_{seed}.npz" if cache else None
    if path is not None and path.exists():
        return dict(np.load(path))
    hits, _, particles, truth = simulate_event(n_particles, [seed, 0])
    rec = _graph_record(SubEvent(hits, particles, truth, None), {})
    out = {k: rec["nodes"][k] for k in KEYS[:-1]}
    out["truth_edges"] = rec["truth_edges"]["edge"].T
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def measure(
    builder: LayerPairMap | ModuleMap, event: dict[str, np.ndarray], device: str
) -> tuple[dict, float]:
    """Edge counts (:func:`edge_metrics`, pT cuts 0.5 and 1) and seconds of one event."""
    ev = {k: torch.as_tensor(v).to(device) for k, v in event.items()}
    args = [ev["x"], ev["volume_id"], ev["layer_id"]]
    if isinstance(builder, ModuleMap):
        args.append(ev["module_id"])
    if device.startswith("cuda"):
        builder(*(a[:100] for a in args))
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    edges = builder(*args)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    n = len(ev["x"])
    counts = edge_metrics(edges, ev["truth_edges"], ev["particle_id"], ev["pt"], n, (0.5, 1.0))
    return counts, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000, 5000, 10000])
    parser.add_argument("--events", type=int, default=1, help="test events per size")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=3,
        help="seed of the first test event (seeds 1-2 chose the module map's settings)",
    )
    parser.add_argument("--train-events", type=int, default=240)
    parser.add_argument("--train-particles", type=int, default=10000)
    parser.add_argument("--lp-train-events", type=int, default=40)
    parser.add_argument("--lp-pt-min", type=float, default=0.9)
    parser.add_argument("--lp-max-size", type=int, default=2000)
    parser.add_argument(
        "--map-settings",
        type=json.loads,
        default={},
        help="ModuleMap settings as JSON, e.g. '{\"pt_min\": 0.5}' (default: its defaults)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="folder for simulated events")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--real",
        default="/work/shared/data/trackml/event000000001",
        help="a real TrackML event (prefix) to apply both maps to; '' to skip",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    lp_train = [graph_record(500, 1000 + i, args.cache) for i in range(args.lp_train_events)]
    layer_pairs = LayerPairMap(pt_min=args.lp_pt_min).fit(lp_train).to(args.device)
    t1 = time.perf_counter()
    train = (
        graph_record(args.train_particles, 1000 + i, args.cache) for i in range(args.train_events)
    )
    module_map = ModuleMap(**args.map_settings).fit(train).to(args.device)
    t2 = time.perf_counter()
    print(
        f"layer_pairs: {len(layer_pairs.pairs)} layer pairs (pT >= {args.lp_pt_min}), "
        f"{args.lp_train_events} events of 500 primaries, {t1 - t0:.0f} s to simulate + fit\n"
        f"module_map: {len(module_map.pairs)} module pairs on {len(module_map.module_keys)} "
        f"modules, {args.train_events} events of {args.train_particles} primaries, "
        f"{t2 - t1:.0f} s to simulate/load + fit\n"
        f"device {args.device}, {torch.get_num_threads()} CPU thread(s), {args.events} test "
        "event(s) per size"
    )
    rows = []
    for size in args.sizes:
        events = [graph_record(size, args.first_seed + i, args.cache) for i in range(args.events)]
        hits = sum(len(ev["x"]) for ev in events) / len(events)
        for name, builder in (("layer_pairs", layer_pairs), ("module_map", module_map)):
            if name == "layer_pairs" and size > args.lp_max_size:
                rows.append({"primaries": size, "hits": hits, "method": name})
                continue
            counts, seconds = [], 0.0
            for event in events:
                c, s = measure(builder, event, args.device)
                counts.append(c)
                seconds += s
            total = pd.DataFrame(counts).sum().to_dict()
            r = edge_ratios(total)
            rows.append(
                {
                    "primaries": size,
                    "hits": hits,
                    "method": name,
                    "per_hit": total["n_edges"] / len(events) / hits,
                    "eff_pt1": r["efficiency_pt1"],
                    "eff_pt0.5": r["efficiency_pt0.5"],
                    "purity": r["purity"],
                    "seconds": seconds / len(events),
                }
            )
        print_row(rows[-2], rows[-1])
    if args.real and Path(args.real + "-hits.csv.gz").exists():
        hits, particles, truth = load_event(args.real, ("hits", "particles", "truth"))
        rec = _graph_record(SubEvent(hits, particles, truth, None), {})
        event = {k: rec["nodes"][k] for k in KEYS[:-1]}
        event["truth_edges"] = rec["truth_edges"]["edge"].T
        key = module_key(*(torch.as_tensor(event[k]) for k in KEYS[1:4])).to(args.device)
        unseen = int((module_map.module_index(key) < 0).sum())
        print(f"real event {Path(args.real).name}: {len(hits):,} hits, {unseen} on unseen modules")
        row = {}
        for name, builder in (("layer_pairs", layer_pairs), ("module_map", module_map)):
            c, s = measure(builder, event, args.device)
            r = edge_ratios(c)
            row[name] = {
                "primaries": 0,
                "hits": len(hits),
                "per_hit": c["n_edges"] / len(hits),
                "eff_pt1": r["efficiency_pt1"],
                "eff_pt0.5": r["efficiency_pt0.5"],
                "purity": r["purity"],
                "seconds": s,
            }
        print_row(row["layer_pairs"], row["module_map"])


def print_row(lp: dict, mm: dict) -> None:
    """One table row: both methods side by side, module map / layer pairs ratios."""
    if print_row.first:
        print(
            "| primaries | hits | edges/hit LP | edges/hit MM | MM/LP | eff pT>1 LP | eff pT>1 MM "
            "| eff pT>0.5 LP | eff pT>0.5 MM | purity LP | purity MM | s LP | s MM | MM/LP s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )
        print_row.first = False

    def f(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    def ratio(key: str) -> str:
        return f"{mm[key] / lp[key]:.2f}" if key in lp and lp[key] > 0 else "-"

    print(
        f"| {mm['primaries']:,} | {mm['hits']:,.0f} | {f(lp, 'per_hit', '.1f')} | "
        f"{f(mm, 'per_hit', '.1f')} | {ratio('per_hit')} | {f(lp, 'eff_pt1', '.4f')} | "
        f"{f(mm, 'eff_pt1', '.4f')} | {f(lp, 'eff_pt0.5', '.4f')} | {f(mm, 'eff_pt0.5', '.4f')} | "
        f"{f(lp, 'purity', '.4f')} | {f(mm, 'purity', '.4f')} | {f(lp, 'seconds', '.2f')} | "
        f"{f(mm, 'seconds', '.2f')} | {ratio('seconds')} |",
        flush=True,
    )


print_row.first = True

if __name__ == "__main__":
    main()
