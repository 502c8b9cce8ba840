"""Run by tests/test_distributed.py (Lightning's DDP re-runs this file in each rank).

Trains a linear model y = a*x + b with ``trainer=ddp_sim`` (2 processes) on a ``ParquetStream``
read by 2 DataLoader workers per rank, shuffled with the epoch, and records which sample ids
every rank x worker yielded in each epoch: ``<out>/epoch_<n>.json`` (written by rank 0) and
the fitted weights ``<out>/weights.json``.

    python tests/ddp_stream_probe.py <parquet dir> <out dir> <epochs>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, get_worker_info

import hepexp.run  # noqa: F401  (registers resolvers)
from hepexp.data.streaming import ParquetStream

CONF_DIR = Path(__file__).resolve().parents[1] / "hepexp" / "conf"


def to_batch(table) -> dict:
    """A batch of tensors, tagged with the DataLoader worker that read it."""
    info = get_worker_info()
    return {
        "id": torch.from_numpy(table.column("id").to_numpy()),
        "x": torch.from_numpy(table.column("x").to_numpy()).float(),
        "y": torch.from_numpy(table.column("y").to_numpy()).float(),
        "worker": -1 if info is None else info.id,
    }


class StreamProbe(pl.LightningModule):
    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.line = torch.nn.Linear(1, 1)
        self.seen: list[tuple[int, list[int]]] = []

    def on_train_epoch_start(self) -> None:
        # the shuffled order depends on the epoch; workers start after this hook
        self.trainer.train_dataloader.dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append((int(batch["worker"]), batch["id"].tolist()))
        loss = torch.nn.functional.mse_loss(self.line(batch["x"][:, None])[:, 0], batch["y"])
        self.log("train/loss", loss, sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        gathered: list = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, {"rank": self.global_rank, "seen": self.seen})
        self.seen = []
        if self.trainer.is_global_zero:
            path = self.out_dir / f"epoch_{self.current_epoch}.json"
            path.write_text(json.dumps(gathered))

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            weights = {"a": self.line.weight.item(), "b": self.line.bias.item()}
            (self.out_dir / "weights.json").write_text(json.dumps(weights))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.3)


def main(data_dir: Path, out_dir: Path, epochs: int) -> None:
    torch.set_num_threads(1)  # a tiny model; the ranks share the cores
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp_sim"], return_hydra_config=False)
    files = sorted(data_dir.glob("*.parquet"))
    stream = ParquetStream(files, batch_size=32, shuffle=True, seed=5, transform=to_batch)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(out_dir),
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(StreamProbe(out_dir), train_dataloaders=loader)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
