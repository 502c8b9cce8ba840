"""Which regressed parameter limits a trained regressor_flash: TrackML score with predicted
parameters replaced by the true ones, and the theta residual near / far from z = 0.

For a checkpoint, predicts the events of a split, then clusters (with the model's chosen
HDBSCAN settings) the predictions as they are, with the true theta, with the true (sin phi,
cos phi), and with both, and prints the mean TrackML score of each. The theta residual is split
by the particle's production vertex |vz| (near: < 20 mm, far: > 60 mm), since the hit frame
measures directions from the origin.

    python benchmarks/regressor_oracle.py <run>/checkpoints/best.ckpt [--split test]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from hepexp.checkpoint import build_datamodule
from hepexp.metrics.trackml import score_event
from hepexp.run.common import model_from_checkpoint


def sigma68(values: np.ndarray) -> float:
    """Half the width of the central 68% of ``values``."""
    lo, hi = np.percentile(values, [16, 84])
    return float(hi - lo) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt_path")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    model, cfg = model_from_checkpoint(args.ckpt_path)
    datamodule = build_datamodule(cfg.data, model.view)
    datamodule.setup("test" if args.split == "test" else "fit")
    events = model.predict_events(datamodule, args.split)
    variants = {
        "predicted": lambda p, y: p,
        "true theta": lambda p, y: np.c_[y[:, :1], p[:, 1:]],
        "true phi": lambda p, y: np.c_[p[:, :1], y[:, 1:3], p[:, 3:]],
        "true theta and phi": lambda p, y: np.c_[y[:, :3], p[:, 3:]],
    }
    features: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    truths, near, far = [], [], []
    for event in events:
        _, particles, truth, _ = datamodule.event(args.split, event["event_id"])
        pred, true, pid = event["pred"], event["y"], event["particle_id"]
        vz = np.abs(particles.set_index("particle_id").vz.reindex(pid).to_numpy())
        residual = (pred[:, 0] - true[:, 0])[pid != 0]
        near.append(residual[vz[pid != 0] < 20])
        far.append(residual[vz[pid != 0] > 60])
        for name, replace in variants.items():
            features[name].append(replace(pred, true).astype(np.float32))
        truths.append((event["hit_id"], truth))

    print(f"{args.ckpt_path}: {len(events)} {args.split} events, {model.cluster_settings()}")
    print(
        f"theta residual sigma68: |vz| < 20 mm {sigma68(np.concatenate(near)):.3f}, "
        f"|vz| > 60 mm {sigma68(np.concatenate(far)):.3f}"
    )
    for name, preds in features.items():
        labels, _ = model.cluster(preds)
        scores = [
            score_event(truth, pd.DataFrame({"hit_id": hit_id, "track_id": label}))
            for (hit_id, truth), label in zip(truths, labels, strict=True)
        ]
        print(f"TrackML score with {name:<20} {np.mean(scores):.4f}")


if __name__ == "__main__":
    main()
