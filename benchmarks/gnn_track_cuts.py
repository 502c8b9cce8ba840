"""Track-building cuts of a trained interaction_gnn, chosen on validation events.

The GNN runs once per event; the walkthrough (and connected components) then build tracks for
every point of a grid of cuts (``cc_cut`` x ``walk_cut`` x ``min_hits``), each scored with
hepexp's tracking evaluation (DM efficiency and fake rate at pT > 1 GeV, pT > 0.9 GeV, TrackML
score). The table is sorted by DM efficiency at pT > 1; the recommended point is the one with
the highest DM among those whose fake rate is <= ``--max-fake`` (pass its cuts to evaluate.py
as ``model.tracks.*`` overrides, or store them with ``convert.py``'s overrides).

    python benchmarks/gnn_track_cuts.py CKPT --events 20                  # the run's val split
    python benchmarks/gnn_track_cuts.py CKPT --events 20 --data-override data.simulation.seed=9
"""

from __future__ import annotations

import argparse
import itertools
import time
from functools import partial

import pandas as pd
import torch
from tqdm.auto import tqdm

from hepexp.api import load_model
from hepexp.checkpoint import build_datamodule
from hepexp.models.interaction_gnn import build_tracks
from hepexp.reco.evaluation import TrackingEvaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("--events", type=int, default=20, help="validation events used")
    parser.add_argument("--cc-cuts", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    parser.add_argument("--walk-cuts", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    parser.add_argument("--min-hits", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--max-fake", type=float, default=0.01)
    parser.add_argument("--data-override", nargs="*", default=[], help="data.key=value")
    parser.add_argument("--csv", default=None, help="also write the table here")
    args = parser.parse_args()

    model = load_model(args.ckpt, overrides=args.data_override)
    datamodule = build_datamodule(model.run_config.data, model.view)
    datamodule.setup("fit")
    dataset = datamodule.dataset("val")
    n = min(args.events, len(dataset))
    scored = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in tqdm(range(n), desc="GNN on validation events", unit="event"):
            item = dataset[i]
            nodes = {k: torch.as_tensor(v) for k, v in item["nodes"].items()}
            result = model.find_tracks(nodes)
            edges, scores = result["edges"].cpu().numpy(), result["scores"].float().cpu().numpy()
            scored.append(
                (item["event_id"], nodes["hit_id"].numpy(), len(nodes["x"]), edges, scores)
            )
    gnn_seconds = (time.perf_counter() - start) / max(n, 1)

    rows = []
    grid = itertools.product(
        ("walkthrough", "components"), args.cc_cuts, args.walk_cuts, args.min_hits
    )
    for method, cc_cut, walk_cut, min_hits in grid:
        if method == "components" and walk_cut != args.walk_cuts[0]:
            continue  # connected components has no walk cut
        cuts = {"cc_cut": cc_cut, "walk_cut": walk_cut, "min_hits": min_hits}
        tracking = TrackingEvaluation(partial(datamodule.event, "val"), (1.0, 0.9))
        for event_id, hit_id, n_hits, edges, scores in scored:
            tracking.add(event_id, hit_id, build_tracks(n_hits, edges, scores, method, cuts))
        summary = tracking.summary()
        rows.append(
            {
                "method": method,
                **cuts,
                "dm_pt1": summary[1.0]["double_majority"],
                "fake_pt1": summary[1.0]["fake_rate"],
                "dm_pt0.9": summary[0.9]["double_majority"],
                "perfect_pt1": summary[1.0]["perfect"],
                "trackml_score": summary["trackml_score"],
            }
        )
    table = pd.DataFrame(rows).sort_values("dm_pt1", ascending=False, ignore_index=True)
    stored = model.tracks_cfg
    print(f"{args.ckpt}: {n} validation events, GNN {gnn_seconds:.1f} s per event")
    print(f"stored cuts: {stored}")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    allowed = table[table["fake_pt1"] <= args.max_fake]
    if len(allowed):
        best = allowed.iloc[0]
        print(
            f"recommended (highest DM with fake <= {args.max_fake}): model.tracks.method="
            f"{best['method']} model.tracks.cc_cut={best['cc_cut']:g} "
            f"model.tracks.walk_cut={best['walk_cut']:g} model.tracks.min_hits={best['min_hits']}"
            f"  (DM {best['dm_pt1']:.4f}, fake {best['fake_pt1']:.4f})"
        )
    else:
        print(f"no point of the grid reaches fake <= {args.max_fake}")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
