"""Layer-pair graph construction vs event size and the window pT: edges, efficiency, purity, time.

The map is fitted on ``--train-events`` simulated events of ``--train-particles`` primaries
(noise kept), then applied to ``--events`` fresh events of each size in ``--sizes`` (figures
summed over them, seconds averaged); for each window pT
(``--pt-min``) it prints edges per event and per hit, the share of truth-graph edges found
(all, and of particles with pT > 0.9 / 1 GeV), the purity (edges joining consecutive hits of one
particle; edges joining one particle) and the seconds to build the graph.

    python benchmarks/gnn_graph_construction.py
    python benchmarks/gnn_graph_construction.py --sizes 200 1000 8000 --pt-min 0.7 0.9 --events 1
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from hepexp.data.trackml.datamodule import _graph_record
from hepexp.data.trackml.simulate import simulate_event
from hepexp.data.trackml.subevents import SubEvent
from hepexp.reco.graph_building import LayerPairMap, edge_metrics, edge_ratios


def graph_record(n_particles: int, seed: int) -> dict:
    """The ``graph`` view record of one simulated event (with noise)."""
    hits, _, particles, truth = simulate_event(n_particles, [seed, 0])
    rec = _graph_record(SubEvent(hits, particles, truth, None), {})
    nodes = dict(rec["nodes"])
    nodes["truth_edges"] = rec["truth_edges"]["edge"].T
    return nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-events", type=int, default=40)
    parser.add_argument("--train-particles", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000, 8000])
    parser.add_argument("--pt-min", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--events", type=int, default=3, help="test events per size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    train = [graph_record(args.train_particles, 1000 + i) for i in range(args.train_events)]
    print(
        f"map fitted on {args.train_events} events of {args.train_particles} primaries; "
        f"device {args.device}, {torch.get_num_threads()} CPU threads"
    )
    header = (
        f"{'primaries':>9} {'hits':>7} {'pT min':>6} {'edges':>10} {'/hit':>6} {'eff':>6} "
        f"{'eff>0.9':>7} {'eff>1':>6} {'purity':>7} {'pur(pid)':>8} {'seconds':>8}"
    )
    print(header)
    maps = {pt: LayerPairMap(pt_min=pt).fit(train).to(args.device) for pt in args.pt_min}
    for size in args.sizes:
        events = [graph_record(size, 1 + i) for i in range(args.events)]
        hits = sum(len(ev["x"]) for ev in events) / len(events)
        for pt, graph_map in maps.items():
            counts, seconds = [], 0.0
            for event in events:
                nodes = {k: torch.as_tensor(v).to(args.device) for k, v in event.items()}
                if args.device.startswith("cuda"):
                    graph_map(nodes["x"][:100], nodes["volume_id"][:100], nodes["layer_id"][:100])
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                edges = graph_map(nodes["x"], nodes["volume_id"], nodes["layer_id"])
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds += time.perf_counter() - t0
                n = len(nodes["x"])
                counts.append(
                    edge_metrics(edges, nodes["truth_edges"], nodes["particle_id"], nodes["pt"], n)
                )
            total = pd.DataFrame(counts).sum().to_dict()
            r = edge_ratios(total)
            per_event = total["n_edges"] / len(events)
            print(
                f"{size:>9} {hits:>7.0f} {pt:>6.1f} {per_event:>10,.0f} {per_event / hits:>6.1f} "
                f"{r['efficiency']:>6.3f} {r['efficiency_pt0.9']:>7.4f} {r['efficiency_pt1']:>6.4f} "
                f"{r['purity']:>7.4f} {r['purity_same_particle']:>8.4f} {seconds / len(events):>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
