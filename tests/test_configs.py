"""Every config composes and instantiates; impossible model/data pairs fail early and helpfully."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hepexp.checkpoint import build_model
from hepexp.errors import ConfigError
from hepexp.run.common import check_pairing, valid_pairs
from hepexp.run.train import _instantiate_dict

from .conftest import CONF_DIR, compose_config

PAIRS = valid_pairs()
TRAINERS = sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml"))
LOGGERS = sorted(p.stem for p in (CONF_DIR / "logger").glob("*.yaml"))
CALLBACKS = sorted(p.stem for p in (CONF_DIR / "callbacks").glob("*.yaml"))


def test_every_model_config_has_a_data_source() -> None:
    models = {p.stem for p in (CONF_DIR / "model").glob("*.yaml")}
    assert models == {m for m, _ in PAIRS}, "a model config pairs with no data source"


@pytest.mark.parametrize(("model", "data"), PAIRS)
def test_pair_composes_and_instantiates(tmp_path: Path, model: str, data: str) -> None:
    cfg = compose_config(tmp_path, [f"model={model}", f"data={data}"])
    view = check_pairing(cfg)
    net = build_model(cfg.model)
    assert net.view == view
    assert sum(p.numel() for p in net.parameters()) > 0
    datamodule = instantiate(cfg.data, view=view)
    assert datamodule.view == view
    # the config stored in checkpoints must be plain data
    OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_configs(tmp_path: Path, trainer: str) -> None:
    cfg = compose_config(tmp_path, [f"trainer={trainer}"])
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.precision == "bf16-mixed"
        return  # composes; instantiating needs a GPU
    trainer_obj = instantiate(cfg.trainer)
    assert trainer_obj.num_devices == (
        cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    )


def test_ddp_gpu_honours_devices_and_nodes(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, ["trainer=ddp_gpu", "trainer.devices=8", "trainer.num_nodes=2"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 8, 2)


@pytest.mark.parametrize("logger", LOGGERS)
def test_logger_configs(tmp_path: Path, logger: str) -> None:
    cfg = compose_config(tmp_path, [f"logger={logger}"])
    loggers = _instantiate_dict(cfg.logger)
    assert any(type(lg).__name__ == "CSVLogger" for lg in loggers), "CSV metrics are always written"


@pytest.mark.parametrize("callbacks", CALLBACKS)
def test_callback_configs(tmp_path: Path, callbacks: str) -> None:
    cfg = compose_config(tmp_path, [f"callbacks={callbacks}"])
    objs = _instantiate_dict(cfg.callbacks)
    if callbacks != "none":
        ckpt = [cb for cb in objs if type(cb).__name__ == "ModelCheckpoint"][0]
        assert ckpt.monitor == cfg.optimized_metric
        assert Path(ckpt.dirpath) == Path(cfg.paths.output_dir) / "checkpoints"


@pytest.mark.parametrize("debug", sorted(p.stem for p in (CONF_DIR / "debug").glob("*.yaml")))
def test_debug_configs(tmp_path: Path, debug: str) -> None:
    cfg = compose_config(tmp_path, [f"debug={debug}"])
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.evaluate_after is False


@pytest.mark.parametrize("group", ["experiment", "hparams_search"])
def test_override_groups_compose(tmp_path: Path, group: str) -> None:
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        if group == "hparams_search" and not _sweeper_configs_present(path):
            continue  # checked by test_searches_name_existing_keys until the sweeper is merged
        cfg = compose_config(tmp_path, [f"{group}={path.stem}"])
        check_pairing(cfg)
        build_model(cfg.model)


def _sweeper_configs_present(search: Path) -> bool:
    """Whether every ``override /hydra/sweeper...`` config a search names exists."""
    for entry in OmegaConf.to_container(OmegaConf.load(search).get("defaults", [])):
        for key, value in entry.items() if isinstance(entry, dict) else []:
            if key.startswith("override /hydra/sweeper"):
                group = key.removeprefix("override /")
                if not (CONF_DIR / group / f"{value}.yaml").exists():
                    return False
    return True


@pytest.mark.parametrize(
    "search", sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("regressor*.yaml"))
)
def test_searches_name_existing_keys(tmp_path: Path, search: str) -> None:
    """Every searched key exists in the model/data pair the search overrides; the first value
    of each choice builds a model."""
    node = OmegaConf.load(CONF_DIR / "hparams_search" / f"{search}.yaml")
    pair = {}
    for entry in OmegaConf.to_container(node.defaults):
        for key, value in entry.items() if isinstance(entry, dict) else []:
            if key in ("override /model", "override /data"):
                pair[key.removeprefix("override /")] = value
    assert set(pair) == {"model", "data"}, "a search names its model and data explicitly"
    assert pair["model"] + "_optuna" == search
    cfg = compose_config(tmp_path, [f"model={pair['model']}", f"data={pair['data']}"])
    params = node.hydra.sweeper.params
    assert params, "a search with nothing to search"
    # a validation metric the model logs: val/trackml_score needs val_score_events > 0
    assert node.optimized_metric in ("val/loss", "val/trackml_score")
    if node.optimized_metric == "val/trackml_score":
        assert node.optimized_mode == "max" and node.model.val_score_events > 0
    first = []
    for key, value in params.items():
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key
        if str(value).startswith("choice("):
            first.append(f"{key}={str(value)[7:].split(',')[0].strip()}")
    sampled = compose_config(tmp_path, [f"model={pair['model']}", f"data={pair['data']}", *first])
    assert sum(p.numel() for p in build_model(sampled.model).parameters()) > 0


def test_default_is_regressor_flash_on_tml10_50(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path)
    assert cfg.model._target_ == "hepexp.models.regressor.TransformerRegressor"
    assert cfg.data._target_ == "hepexp.data.trackml.datamodule.TrackMLDataModule"
    assert cfg.data.source == "simulate"
    assert list(cfg.data.particles_per_event) == [10, 50] and cfg.data.noise is False
    assert cfg.evaluate_after is True, "the run ends by printing the test TrackML score"
    improved = ("direction_features", "hit_frame", "geometric_attention", "ffn_gate")
    assert all(cfg.model[k] for k in improved)


@pytest.mark.parametrize(
    ("preset", "params"), [("regressor_flash_paper", 201_348), ("regressor_flash_large", 928_388)]
)
def test_published_regressor_presets(tmp_path: Path, preset: str, params: int) -> None:
    """The published architectures (the Transformer Regressor thesis: 928k parameters for TML:200-500)."""
    cfg = compose_config(tmp_path, [f"model={preset}"])
    improved = ("direction_features", "hit_frame", "geometric_attention", "ffn_gate")
    assert not any(cfg.model[k] for k in improved), "the original architecture"
    assert cfg.model.scheduler is None and cfg.model.optimizer.lr == 1e-3
    assert sum(p.numel() for p in build_model(cfg.model).parameters()) == params


def test_impossible_pair_lists_valid_pairs(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, ["model=jet_ae", "data=atlas_jets"])
    cfg.data._target_ = "tests.test_configs.NoViewsData"
    with pytest.raises(ConfigError) as err:
        check_pairing(cfg)
    text = str(err.value)
    assert "needs view 'jet_vectors'" in text
    for model, data in PAIRS:
        assert f"model={model} data={data}" in text


def test_unknown_target_is_a_config_error(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path)
    cfg.model._target_ = "hepexp.models.nope.Missing"
    with pytest.raises(ConfigError, match="cannot load 'hepexp.models.nope.Missing'"):
        check_pairing(cfg)


class NoViewsData:
    views: dict[str, str] = {"something_else": "not what any model eats"}


def test_interaction_gnn_stage_defaults_equal_the_yaml(tmp_path: Path) -> None:
    """The GNN's stage settings have one set of defaults: a model built in Python gets the
    values train.py composes."""
    from hepexp.models import interaction_gnn as gnn

    cfg = compose_config(tmp_path, ["model=interaction_gnn", "data=trackml"]).model
    assert OmegaConf.to_container(cfg.graph.layer_pairs) == gnn.DEFAULT_LAYER_PAIRS
    assert OmegaConf.to_container(cfg.graph.module_map) == gnn.DEFAULT_MODULE_MAP
    assert OmegaConf.to_container(cfg.graph.metric_learning) == gnn.DEFAULT_METRIC_LEARNING
    graph = {k: v for k, v in cfg.graph.items() if not OmegaConf.is_dict(v)}
    assert graph == gnn.DEFAULT_GRAPH
    assert OmegaConf.to_container(cfg.filter) == gnn.DEFAULT_FILTER
    assert OmegaConf.to_container(cfg.tracks) == gnn.DEFAULT_TRACKS


#: each class's own config file: a model or data module built in Python with its defaults is
#: the one train.py builds from that file
OWN_CONFIG = {
    "model/regressor_flash.yaml": "hepexp.models.regressor.TransformerRegressor",
    "model/vqvae_cond.yaml": "hepexp.models.vqvae.TrackVQVAE",
    "model/vqvae_uncond.yaml": "hepexp.models.vqvae.HitVQVAE",
    "model/jet_ae.yaml": "hepexp.models.jet_ae.JetAutoencoder",
    "model/om2vec.yaml": "hepexp.models.om2vec.Om2Vec",
    "model/interaction_gnn.yaml": "hepexp.models.interaction_gnn.InteractionGNNTracker",
    "data/trackml.yaml": "hepexp.data.trackml.datamodule.TrackMLDataModule",
    "data/prometheus.yaml": "hepexp.data.prometheus.datamodule.PrometheusDataModule",
    "data/atlas_jets.yaml": "hepexp.data.jets.JetDataModule",
}


def _plain(value: object) -> object:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("path", sorted(OWN_CONFIG))
def test_python_defaults_equal_the_yaml(path: str) -> None:
    """One source of defaults: every constructor default of the class equals the value its
    config file sets (values that interpolate other settings, and nested objects, excepted)."""
    import importlib
    import inspect

    node = OmegaConf.load(CONF_DIR / path)
    module, name = OWN_CONFIG[path].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert node._target_ == OWN_CONFIG[path]
    drift = {}
    for param in inspect.signature(cls).parameters.values():
        if param.default is inspect.Parameter.empty or param.name not in node:
            continue
        raw = OmegaConf.to_container(node, resolve=False)[param.name]
        if isinstance(raw, str) and "${" in raw or isinstance(raw, dict):
            continue
        if _plain(param.default) != raw:
            drift[param.name] = (param.default, raw)
    assert not drift, f"{name}: Python default != {path} for {drift}"
