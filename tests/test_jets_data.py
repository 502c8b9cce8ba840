"""Jet tables: every format, the simulator, and a clear error for each kind of bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import torch

from hepexp.data.jets import JetDataModule, read_jets, simulate_jets, write_jets
from hepexp.errors import ConfigError, DataError

from .conftest import shared_file


@pytest.fixture
def jets_mev() -> pd.DataFrame:
    return simulate_jets(2000, seed=3)


def test_simulated_jets_look_like_trigger_jets() -> None:
    jets = simulate_jets(200_000, seed=1)
    pt = jets.pt.to_numpy() / 1e3
    assert pt.min() >= 20.0
    assert 23 < np.median(pt) < 35, "steeply falling spectrum from the 20 GeV threshold"
    counts, _ = np.histogram(pt, bins=np.geomspace(20, 2000, 11))
    assert (np.diff(counts) < 0).all(), "falling in every log bin"
    assert (pt > 500).sum() > 50, "with a hard tail"
    assert np.abs(jets.eta).max() <= 4.5
    assert 0.15 < (np.abs(jets.eta) > 2.5).mean() < 0.25
    assert np.abs(jets.phi).max() <= np.pi
    ratio = jets.m / jets.pt
    assert 0.12 < ratio.median() < 0.16
    assert ratio.max() < 0.3, "no more mass than a jet of radius 0.4 holds"
    assert 0.001 < (jets.m <= 0).mean() < 0.01, "a few jets with m <= 0"
    assert jets.m.min() > -1e3, "m > -1 GeV: log10(m + 1 GeV) stays defined"
    # m/pT falls with pt (median 0.10-0.11 at ~100 GeV, as printed leading trigger jets), and
    # spreads by ~0.3 in ln(m/pT) at given pt (less where the cap at 0.3 bites)
    hard = (pt > 80) & (pt < 120)
    assert 0.09 < ratio[hard].median() < 0.12 < ratio[pt < 25].median()
    soft = ratio[(pt < 25) & (jets.m > 0)]
    assert 0.2 < np.log(soft).std() < 0.3


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_table_round_trip_in_mev(tmp_path: Path, jets_mev: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"jets{suffix}"
    write_jets(path, jets_mev) if suffix != ".csv.gz" else jets_mev.to_csv(path, index=False)
    back = read_jets(path)  # tables default to MeV; returned in GeV
    np.testing.assert_allclose(back.pt.to_numpy(), jets_mev.pt.to_numpy() / 1e3, rtol=1e-12)
    np.testing.assert_allclose(back.eta.to_numpy(), jets_mev.eta.to_numpy(), rtol=1e-12)
    assert list(back.columns) == ["m", "pt", "phi", "eta"]


def test_units_are_configurable(tmp_path: Path, jets_mev: pd.DataFrame) -> None:
    gev = jets_mev.assign(m=jets_mev.m / 1e3, pt=jets_mev.pt / 1e3)
    write_jets(tmp_path / "gev.parquet", gev)
    back = read_jets(tmp_path / "gev.parquet", units="GeV")
    np.testing.assert_allclose(back.pt.to_numpy(), gev.pt.to_numpy())


def test_wrong_units_are_caught(tmp_path: Path, jets_mev: pd.DataFrame) -> None:
    gev = jets_mev.assign(m=jets_mev.m / 1e3, pt=jets_mev.pt / 1e3)
    write_jets(tmp_path / "gev.parquet", gev)
    with pytest.raises(
        DataError, match=r"gev.parquet, field 'pt': median pt .* set data.units=GeV"
    ):
        read_jets(tmp_path / "gev.parquet")  # read as MeV
    with pytest.raises(DataError, match="set data.units=MeV"):
        read_jets(tmp_path / "gev.parquet", units="TeV")


def test_missing_column(tmp_path: Path, jets_mev: pd.DataFrame) -> None:
    write_jets(tmp_path / "j.parquet", jets_mev.drop(columns="eta"))
    with pytest.raises(DataError, match=r"j.parquet, field 'eta': missing column"):
        read_jets(tmp_path / "j.parquet")


def test_nan_values(tmp_path: Path, jets_mev: pd.DataFrame) -> None:
    bad = jets_mev.copy()
    bad.loc[[5, 17], "phi"] = np.nan
    write_jets(tmp_path / "j.csv", bad)
    with pytest.raises(DataError, match=r"j.csv, field 'phi': 2 of 2000 values are NaN .*row 5"):
        read_jets(tmp_path / "j.csv")


def test_non_numeric_values(tmp_path: Path, jets_mev: pd.DataFrame) -> None:
    bad = jets_mev.astype({"m": object})
    bad.loc[3, "m"] = "heavy"
    bad.to_csv(tmp_path / "j.csv", index=False)
    with pytest.raises(DataError, match=r"field 'm': expected numbers"):
        read_jets(tmp_path / "j.csv")


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.parquet: file not found"):
        read_jets(tmp_path / "nope.parquet")
    (tmp_path / "jets.h5").write_bytes(b"")
    with pytest.raises(DataError, match="unknown jet table format"):
        read_jets(tmp_path / "jets.h5")


def test_pickles_need_explicit_opt_in(tmp_path: Path, jets_mev: pd.DataFrame) -> None:
    path = tmp_path / "jets.pkl"
    jets_mev.to_pickle(path)
    with pytest.raises(DataError, match="refusing to unpickle.*data.allow_pickle=true.*to_parquet"):
        read_jets(path)
    back = read_jets(path, allow_pickle=True)
    assert len(back) == len(jets_mev)


def test_pickle_is_not_loaded_without_opt_in(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):  # would run on unpickling
            return (Path(tmp_path / "pwned").touch, ())

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DataError):
        read_jets(path)
    assert not (tmp_path / "pwned").exists()


def test_real_root_file_cartesian_branches() -> None:
    jets = read_jets(shared_file("jets", "uproot-HZZ.root"))
    assert len(jets) == 2773
    assert jets.pt.min() > 29.9  # GeV, the file's jet threshold is 30 GeV
    assert np.abs(jets.eta).max() < 2.5


def test_nanoaod_root_file(tmp_path: Path) -> None:
    import uproot

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, 500)
    n = counts.sum()
    jet = ak.zip(
        {
            "pt": ak.unflatten(rng.uniform(20, 200, n), counts),
            "eta": ak.unflatten(rng.uniform(-2, 2, n), counts),
            "phi": ak.unflatten(rng.uniform(-3, 3, n), counts),
            "mass": ak.unflatten(rng.uniform(1, 20, n), counts),
        }
    )
    with uproot.recreate(tmp_path / "nano.root") as f:
        f.mktree("Events", {"Jet": jet.type.content})  # NanoAOD layout: nJet, Jet_pt, ...
        f["Events"].extend({"Jet": jet})
    jets = read_jets(tmp_path / "nano.root")
    assert len(jets) == n
    np.testing.assert_allclose(jets.pt.to_numpy(), ak.to_numpy(ak.flatten(jet.pt)))
    np.testing.assert_allclose(jets.m.to_numpy(), ak.to_numpy(ak.flatten(jet.mass)))
    with pytest.raises(DataError, match="no such TTree"):
        read_jets(tmp_path / "nano.root", tree="Other")


def _module(tmp_path: Path, **kwargs) -> JetDataModule:
    options = dict(
        data_dir=str(tmp_path / "data"), simulation={"n_train": 1000, "n_val": 200, "n_test": 300}
    )
    options.update(kwargs)
    return JetDataModule("jet_vectors", **options)


def test_simulated_source_is_written_once_and_reused(tmp_path: Path) -> None:
    dm = _module(tmp_path)
    dm.prepare_data()
    train_file = tmp_path / "data" / "simulated" / "train.parquet"
    stamp = train_file.stat().st_mtime_ns
    dm.setup("fit")
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [1000, 200, 300]
    assert dm.dataset("train").values.dtype == torch.float32
    dm2 = _module(tmp_path)
    dm2.prepare_data()
    assert train_file.stat().st_mtime_ns == stamp, "same settings: reused"
    dm3 = _module(tmp_path, simulation={"n_train": 500, "n_val": 200, "n_test": 300})
    dm3.prepare_data()
    dm3.setup()
    assert len(dm3.dataset("train")) == 500, "other settings: regenerated"


def test_real_files_with_val_cut_from_train(tmp_path: Path) -> None:
    write_jets(tmp_path / "train.parquet", simulate_jets(1000, seed=1))
    write_jets(tmp_path / "test.parquet", simulate_jets(300, seed=2))
    dm = _module(
        tmp_path,
        train_path=str(tmp_path / "train.parquet"),
        test_path=str(tmp_path / "test.parquet"),
        val_fraction=0.2,
    )
    dm.setup()
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [800, 200, 300]
    train = set(map(tuple, dm.dataset("train").values.tolist()))
    val = set(map(tuple, dm.dataset("val").values.tolist()))
    assert not train & val


def test_source_directory_and_single_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_jets(real / "train.parquet", simulate_jets(1000, seed=1))
    write_jets(real / "val.csv", simulate_jets(100, seed=2))
    write_jets(real / "test.parquet", simulate_jets(100, seed=3))
    dm = _module(tmp_path, source=str(real))
    dm.setup()
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [1000, 100, 100]
    single = _module(
        tmp_path, source=str(real / "train.parquet"), val_fraction=0.1, test_fraction=0.2
    )
    single.setup()
    assert [len(single.dataset(s)) for s in ("train", "val", "test")] == [700, 100, 200]
    with pytest.raises(DataError, match="neither 'simulate' nor an existing path"):
        _module(tmp_path, source=str(tmp_path / "missing")).setup()


def test_wrong_view_and_features(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="cannot provide view 'event_hits'; it provides: jet_vectors"
    ):
        JetDataModule("event_hits")
    with pytest.raises(ConfigError, match="data.features"):
        JetDataModule("jet_vectors", features=["pt", "eta"])


def test_batched_loader(tmp_path: Path) -> None:
    dm = _module(tmp_path, batch_size=128)
    # training batches are all full: 1000 % 128 jets, different ones each epoch, sit out
    assert {len(b) for b in dm.loader("train")} == {128}
    assert sum(len(b) for b in dm.loader("train")) == 1000 // 128 * 128
    batches = list(dm.loader("train", drop_last=False))
    assert [b.shape for b in batches[:1]] == [torch.Size([128, 4])]
    assert sum(len(b) for b in batches) == 1000
    everything = torch.cat(batches).numpy()
    expected = dm.fit_sample().numpy()
    by_rows = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(by_rows(everything), by_rows(expected)), "each jet exactly once"
