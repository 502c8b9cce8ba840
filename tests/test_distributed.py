"""Past one machine: run dirs shared by ranks and nodes, rank-0-only outputs, SLURM configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hepexp.checkpoint import load_checkpoint
from hepexp.run.resolvers import process_rank

from .conftest import ROOT, TINY_DATA, compose_config, require_module

RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_NTASKS", "SLURM_PROCID")


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun
        ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, "0-1"),  # Lightning's DDP children
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, "1-0"),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, 0),
        ({"SLURM_NTASKS": "8", "SLURM_PROCID": "5"}, 5),  # srun
        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, 0),  # sbatch, one task
    ],
)
def test_process_rank(monkeypatch: pytest.MonkeyPatch, env: dict, rank: int | str) -> None:
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert process_rank() == rank


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_writes_hydra_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int
) -> None:
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", str(rank))
    cfg = compose_config(tmp_path, [])
    hydra = cfg.hydra
    assert hydra.output_subdir == (".hydra" if rank == 0 else None)
    log_file = Path(hydra.job_logging.handlers.file.filename).name
    assert log_file == ("train.log" if rank == 0 else "train.rank1.log")


def test_run_dir_is_the_slurm_job_on_every_rank(tmp_path: Path) -> None:
    """Every rank of a SLURM job resolves the same run directory (fresh processes)."""
    code = (
        "import hepexp.run; from hydra import compose, initialize_config_dir;"
        f"initialize_config_dir(config_dir={str(ROOT / 'hepexp' / 'conf')!r}, version_base='1.3');"
        "cfg = compose('train', return_hydra_config=True); print(cfg.hydra.run.dir)"
    )
    dirs = set()
    for rank in ("0", "1", "2"):
        env = {**os.environ, "SLURM_JOB_ID": "99", "SLURM_NTASKS": "3", "SLURM_PROCID": rank}
        env["HEPEXP_LOG_DIR"] = str(tmp_path)
        env.pop("HEPEXP_RUN_ID", None)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        dirs.add(out.stdout.strip().splitlines()[-1])
    assert dirs == {f"{tmp_path}/train/runs/slurm-99"}


def test_ddp_gpu_multi_node_config(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, ["trainer=ddp_gpu", "trainer.devices=4", "trainer.num_nodes=2"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)


def test_slurm_launcher_takes_its_shape_from_the_trainer(tmp_path: Path) -> None:
    require_module("hydra_plugins.hydra_submitit_launcher", "hepexp[slurm] is not installed")
    cfg = compose_config(
        tmp_path,
        ["hydra/launcher=slurm", "trainer=ddp_gpu", "trainer.devices=4", "trainer.num_nodes=2"],
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_dir_and_only_rank_zero_writes(tmp_path: Path) -> None:
    """Two ranks started by torchrun (as srun or a multi-node launch would): one run dir from
    the torchrun run id, Hydra's records and outputs written once, a log file per rank; a
    time-budgeted schedule runs in step on both ranks."""
    env = {
        **os.environ,
        "HEPEXP_DATA_DIR": str(tmp_path / "data"),
        "HEPEXP_LOG_DIR": str(tmp_path / "logs"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("HEPEXP_RUN_ID", None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
        "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "--rdzv-id=job7",
        str(ROOT / "train.py"), "model=jet_ae", "data=atlas_jets", "trainer=ddp_sim",
        "trainer.max_epochs=2", "data.batch_size=100",
        "evaluate_after=false", *TINY_DATA["atlas_jets"],
        # model=jet_ae's time-budgeted LR schedule (TimedOneCycleLR, stepped every batch): its
        # time share is broadcast from rank 0 every step
        "trainer.max_time=00:00:09:00",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    runs = sorted((tmp_path / "logs/train/runs").iterdir())
    assert [r.name for r in runs] == ["torchrun-job7"], "both ranks chose one run dir"
    run = runs[0]
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra",
        "checkpoints",
        "config.yaml",
        "csv",
        "metrics.json",
        "train.log",
        "train.rank1.log",
    ]
    assert "Metrics" in (run / "train.log").read_text()
    assert "Metrics" not in (run / "train.rank1.log").read_text(), "rank 1 reports nothing"
    # 3000 jets / 2 ranks / 100 per batch = 15 steps per epoch on each rank
    assert load_checkpoint(run / "checkpoints/last.ckpt")["global_step"] == 30
    # measured: 0.027 trained, 0.19 untrained (max_lr 0)
    assert json.loads((run / "metrics.json").read_text())["val/loss"] < 0.08


@pytest.mark.slow
def test_stream_reads_every_sample_once_per_epoch_across_ranks_and_workers(
    tmp_path: Path,
) -> None:
    """2 DDP ranks (trainer=ddp_sim) x 2 DataLoader workers train on a shuffled ParquetStream:
    in every epoch each of the 4 shards reads a part and together they read each sample once;
    ranks get equally many batches (else DDP hangs), the order changes with the epoch, and the
    model learns the line the samples lie on."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    n, start = 1003, 0
    for i, (rows, group) in enumerate([(400, 64), (503, 100), (100, 100)]):  # uneven groups
        ids = np.arange(start, start + rows)
        x = rng.uniform(-1, 1, rows)
        table = pa.table({"id": ids, "x": x, "y": 3.0 * x + 1.0})
        pq.write_table(table, data / f"part{i}.parquet", row_group_size=group)
        start += rows
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/ddp_stream_probe.py"), str(data), str(out), "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]

    orders = []
    for epoch in range(2):
        gathered = json.loads((out / f"epoch_{epoch}.json").read_text())
        shards: dict[tuple[int, int], list[int]] = {}
        batches = {0: 0, 1: 0}
        for part in gathered:
            for worker, ids in part["seen"]:
                shards.setdefault((part["rank"], worker), []).extend(ids)
                batches[part["rank"]] += 1
        assert sorted(shards) == [(0, 0), (0, 1), (1, 0), (1, 1)], "all 4 shards read data"
        every = sorted(i for ids in shards.values() for i in ids)
        assert every == list(range(n)), f"epoch {epoch}: each sample exactly once"
        per_rank = [sum(len(v) for (r, _), v in shards.items() if r == rank) for rank in (0, 1)]
        assert abs(per_rank[0] - per_rank[1]) <= 1
        assert batches[0] == batches[1], "equal batch counts on both ranks"
        orders.append([i for _, ids in gathered[0]["seen"] for i in ids])
    assert orders[0] != orders[1], "the shuffle changes with the epoch"
    weights = json.loads((out / "weights.json").read_text())
    assert weights["a"] == pytest.approx(3.0, abs=0.02)
    assert weights["b"] == pytest.approx(1.0, abs=0.02)
