"""evaluate.py and convert.py take any override of the checkpoint's config, plainly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from hepexp.data.jets import simulate_jets, write_jets
from hepexp.errors import ConfigError
from hepexp.run.common import merge_overrides, plain_overrides

from .conftest import run_entrypoint, shared_file

STORED = OmegaConf.create(
    {
        "data": {
            "_target_": "hepexp.data.jets.JetDataModule",
            "source": "simulate",
            "train_path": "/old/train.parquet",
            "test_path": "/old/test.parquet",
            "units": "MeV",
            "simulation": {"n_train": 3000, "n_test": 600},
        },
        "model": {"latent_dim": 3, "loss_weights": [0.05, 1, 1, 1]},
    }
)


def test_plain_overrides_become_force_adds_of_data_and_model_keys() -> None:
    args = ["ckpt_path=a.ckpt", "data.units=GeV", "+data.new=1", "model.x.y=null", "split=val"]
    assert plain_overrides(args) == [
        "ckpt_path=a.ckpt", "++data.units=GeV", "+data.new=1", "++model.x.y=null", "split=val",
    ]  # fmt: skip


def test_null_clears_nested_keys_merge_and_unknown_keys_are_named() -> None:
    over = OmegaConf.create(
        {"model": {"loss_weights": None}, "data": {"simulation": {"n_test": 9}}}
    )
    merged = merge_overrides(STORED, over, {"model.loss_weights", "data.simulation.n_test"})
    assert merged.model.loss_weights is None and merged.data.simulation == {
        "n_train": 3000,
        "n_test": 9,
    }
    assert merged.data.train_path == "/old/train.parquet", "no new source: files kept"
    with pytest.raises(ConfigError, match=r"'data.unit' .* close ones: data.units"):
        merge_overrides(STORED, OmegaConf.create({"data": {"unit": "GeV"}}), {"data.unit"})
    with pytest.raises(ConfigError, match="data.simulation.n_tests.*data.simulation.n_test"):
        merge_overrides(STORED, OmegaConf.create({}), {"data.simulation.n_tests"})
    added = merge_overrides(STORED, OmegaConf.create({"data": {"extra": 1}}))  # a deliberate +
    assert added.data.extra == 1


def test_a_new_source_replaces_the_training_files() -> None:
    over = OmegaConf.create({"data": {"source": "/new/cms.root", "units": "GeV"}})
    merged = merge_overrides(STORED, over, {"data.source", "data.units"})
    assert merged.data.source == "/new/cms.root" and merged.data.units == "GeV"
    assert merged.data.train_path is None and merged.data.test_path is None
    # a training file given on the same command line stays
    over = OmegaConf.create({"data": {"source": "/new/cms.root", "test_path": "/new/t.csv"}})
    assert merge_overrides(STORED, over).data.test_path == "/new/t.csv"


@pytest.mark.slow
def test_jet_model_trained_on_tables_evaluates_a_new_root_file(tmp_path: Path) -> None:
    """Trained with data.train_path/test_path (MeV tables), evaluated on the CMS NanoAOD file
    (GeV) with data.source and data.units only: it reads that file and nothing else."""
    cms = shared_file("jets", "nanoAOD_2015_CMS_Open_Data_ttbar.root")
    jets = simulate_jets(2000, seed=3)  # m, pt in MeV, as the ATLAS tables
    write_jets(tmp_path / "train.parquet", jets.iloc[:1600])
    write_jets(tmp_path / "test.parquet", jets.iloc[1600:])
    run_entrypoint(
        "train.py",
        "model=jet_ae",
        "data=atlas_jets",
        f"data.train_path={tmp_path / 'train.parquet'}",
        f"data.test_path={tmp_path / 'test.parquet'}",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "evaluate_after=false",
        cwd=tmp_path,
        env={"HEPEXP_RUN_ID": "tables"},
    )
    ckpt = tmp_path / "logs/train/runs/tables/checkpoints/last.ckpt"
    run_entrypoint(
        "evaluate.py",
        f"ckpt_path={ckpt}",
        f"data.source={cms}",
        "data.units=GeV",
        "data.val_fraction=0.1",
        "data.test_fraction=0.5",
        cwd=tmp_path,
        env={"HEPEXP_RUN_ID": "cms"},
    )
    metrics = json.loads((tmp_path / "logs/evaluate/runs/cms/metrics.json").read_text())
    assert metrics["n_jets"] == int(np.round(0.5 * 537)), "half of the CMS file's 537 jets"
    # an unknown key fails before any work, naming the close one
    with pytest.raises(AssertionError, match="close ones: data.units"):
        run_entrypoint(
            "evaluate.py", f"ckpt_path={ckpt}", "data.unit=GeV", cwd=tmp_path, timeout=120
        )
