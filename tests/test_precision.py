"""bf16 autocast agrees with float32 for every system, on the CPU and (marker ``gpu``) on CUDA.

Each model trains one step in float32 through Lightning, then its validation loss on the same
batches is computed at ``32-true`` and at ``bf16-mixed``; the two must agree to bf16 accuracy.
The CPU variant keeps these code paths exercised on machines without a GPU;
``pytest -m gpu`` runs the CUDA variant (benchmarks/gpu_suite.sh does).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from hepexp.checkpoint import build_datamodule, build_model
from hepexp.models.interaction_gnn import InteractionGNN
from hepexp.run.common import check_pairing

from .conftest import TINY_DATA, compose_config

CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ],
)
DEVICES = ["cpu", CUDA]

# model -> (data, extra overrides keeping the tiny run fast; relative tolerance of val/loss)
SYSTEMS = {
    "jet_ae": ("atlas_jets", [], 0.03),
    "regressor_flash": ("trackml", ["model.scan.enabled=false"], 0.05),
    "vqvae_cond": ("trackml", [], 0.05),
    "vqvae_uncond": ("trackml", [], 0.05),
    "om2vec": ("prometheus", [], 0.03),
    "om2vec_reference": ("prometheus", [], 0.03),
}


def _trainer(device: str, precision: str, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator=device,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=2,
        **kwargs,
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the module: each tiny dataset is simulated once."""
    return tmp_path_factory.mktemp("precision_data")


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_name", sorted(SYSTEMS))
def test_bf16_validation_loss_matches_fp32(
    tmp_path: Path, data_root: Path, model_name: str, device: str
) -> None:
    data_name, extra, tolerance = SYSTEMS[model_name]
    overrides = [f"model={model_name}", f"data={data_name}", *TINY_DATA[data_name], *extra]
    cfg = compose_config(tmp_path, overrides)
    cfg.paths.data_dir = str(data_root)
    pl.seed_everything(0)
    datamodule = build_datamodule(cfg.data, check_pairing(cfg))
    model = build_model(cfg.model)
    _trainer(device, "32-true", max_steps=1, limit_train_batches=1).fit(model, datamodule)
    losses = {
        precision: _trainer(device, precision).validate(model, datamodule, verbose=False)[0][
            "val/loss"
        ]
        for precision in ("32-true", "bf16-mixed")
    }
    fp32, bf16 = losses["32-true"], losses["bf16-mixed"]
    assert math.isfinite(fp32) and math.isfinite(bf16), losses
    assert abs(bf16 - fp32) <= tolerance * abs(fp32), losses
    assert next(model.parameters()).device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_interaction_gnn_bf16_edge_scores_match_fp32(device: str) -> None:
    """The GNN on a random graph: bf16 autocast edge logits follow the float32 ones."""
    torch.manual_seed(0)
    n_nodes, n_edges = 3000, 20000
    x = torch.randn(n_nodes, 3, device=device)
    src = torch.randint(0, n_nodes - 20, (n_edges,), device=device)
    edges = torch.stack([src, src + torch.randint(1, 20, (n_edges,), device=device)])
    edge_attr = torch.randn(n_edges, 6, device=device)
    model = InteractionGNN(3, edge_features=6, hidden=64, n_iterations=4).to(device).eval()
    with torch.no_grad():
        fp32 = model(x, edge_attr, edges)
        with torch.autocast(device, dtype=torch.bfloat16):
            bf16 = model(x, edge_attr, edges).float()
    assert fp32.shape == (n_edges,) and torch.isfinite(bf16).all()
    assert torch.corrcoef(torch.stack([fp32, bf16]))[0, 1] > 0.99
    agree = ((fp32 > 0) == (bf16 > 0)).float().mean()
    assert agree > 0.97, f"bf16 and fp32 edge decisions agree on {agree:.3f} of edges"
