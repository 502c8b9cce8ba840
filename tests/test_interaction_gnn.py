"""Scatter reductions, the Interaction GNN and the edge filter."""

from __future__ import annotations

import pytest
import torch

from hepexp.errors import ConfigError
from hepexp.models.interaction_gnn import EdgeFilter, InteractionGNN, InteractionGNNTracker
from hepexp.nn.scatter import scatter_count, scatter_max, scatter_sum


def _loop_reference(src: torch.Tensor, index: torch.Tensor, n: int, op: str) -> torch.Tensor:
    out = torch.zeros(n, src.shape[1], dtype=src.dtype)
    for i in range(n):
        rows = src[index == i]
        if len(rows):
            out[i] = rows.sum(0) if op == "sum" else rows.max(0).values
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scatter_matches_a_loop(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    src = torch.randn(500, 7, generator=g, dtype=dtype)
    index = torch.randint(0, 60, (500,), generator=g)
    index[index == 13] = 14  # group 13 stays empty
    n = 65  # groups 60..64 empty too
    torch.testing.assert_close(scatter_sum(src, index, n), _loop_reference(src, index, n, "sum"))
    torch.testing.assert_close(scatter_max(src, index, n), _loop_reference(src, index, n, "max"))
    assert (scatter_max(src, index, n)[[13, 60, 64]] == 0).all(), "empty groups are 0"
    with torch.no_grad():  # in chunks of rows: the same maxima, empty groups still 0
        for chunk in (1, 37, 499):
            torch.testing.assert_close(
                scatter_max(src, index, n, chunk), scatter_max(src, index, n)
            )
    assert scatter_count(index, n).tolist() == [int((index == i).sum()) for i in range(n)]


def test_scatter_max_gradient_reaches_the_maxima_only() -> None:
    src = torch.tensor([[1.0], [3.0], [2.0], [-5.0]], requires_grad=True)
    index = torch.tensor([0, 0, 0, 1])
    scatter_max(src, index, 3).sum().backward()
    assert src.grad.squeeze(1).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_ignn_parameter_count_and_shapes() -> None:
    h, f, g = 128, 3, 6

    def mlp_params(n_in: int, n_out: int = h, final: bool = True) -> int:
        # 3 Linear layers, each followed by a LayerNorm (not after the classifier's last)
        sizes = [n_in, h, h, n_out]
        linear = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        norms = 2 * sum(sizes[1:3]) + (2 * n_out if final else 0)
        return linear + norms

    expected = (
        mlp_params(f)  # node encoder
        + mlp_params(2 * f + g)  # edge encoder
        + mlp_params(5 * h)  # node update: h, sum/max of in-edges, sum/max of out-edges
        + mlp_params(3 * h)  # edge update: h_src, h_dst, e
        + mlp_params(3 * h, 1, final=False)  # classifier
    )
    gnn = InteractionGNN(f, hidden=h, n_iterations=8)
    n_params = sum(p.numel() for p in gnn.parameters())
    assert n_params == expected
    assert 300_000 < n_params < 400_000, "the reference IGNN has ~350k parameters"
    # weights are shared between iterations: more iterations, same parameters
    assert sum(p.numel() for p in InteractionGNN(f, hidden=h, n_iterations=2).parameters()) == (
        n_params
    )
    x, edge_attr = torch.randn(50, f), torch.randn(200, g)
    edges = torch.randint(0, 50, (2, 200))
    assert gnn(x, edge_attr, edges).shape == (200,)
    flt = EdgeFilter(f, hidden=32, layers=2)
    assert flt(x, edge_attr, edges).shape == (200,)


def test_ignn_is_equivariant_to_node_order_and_uses_messages() -> None:
    torch.manual_seed(0)
    gnn = InteractionGNN(3, hidden=16, n_iterations=3).double()
    n, e = 40, 120
    x, edge_attr = torch.randn(n, 3).double(), torch.randn(e, 6).double()
    edges = torch.randint(0, n, (2, e))
    out = gnn(x, edge_attr, edges)
    perm = torch.randperm(n)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)
    out_perm = gnn(x[perm], edge_attr, inverse[edges])
    torch.testing.assert_close(out, out_perm)
    # message passing: changing one node's features changes the scores of edges two hops away
    x2 = x.clone()
    x2[edges[0, 0]] += 1.0
    changed = (gnn(x2, edge_attr, edges) - out).abs() > 1e-9
    touching = (edges == edges[0, 0]).any(0)
    assert changed[~touching].any(), "scores depend on more than the edge's own hits"


def test_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(1)
    plain = InteractionGNN(3, hidden=16, n_iterations=3).double()
    ckpt = InteractionGNN(3, hidden=16, n_iterations=3, checkpointing=True).double()
    ckpt.load_state_dict(plain.state_dict())
    x, edge_attr = torch.randn(30, 3).double(), torch.randn(90, 6).double()
    edges = torch.randint(0, 30, (2, 90))
    for model in (plain, ckpt):
        model(x, edge_attr, edges).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_edge_chunks_give_the_same_scores() -> None:
    torch.manual_seed(3)
    gnn = InteractionGNN(3, hidden=16, n_iterations=3).double()
    edge_filter = EdgeFilter(3, hidden=16).double()
    n, e = 50, 333
    x, edge_attr = torch.randn(n, 3).double(), torch.randn(e, 6).double()
    edges = torch.randint(0, 45, (2, e))  # hits 45..49 have no edge: their max message is 0
    with torch.no_grad():
        whole, whole_filter = gnn(x, edge_attr, edges), edge_filter(x, edge_attr, edges)
        for chunk in (1, 64, 100, 332, 1000):
            torch.testing.assert_close(gnn(x, edge_attr, edges, chunk=chunk), whole)
            torch.testing.assert_close(edge_filter(x, edge_attr, edges, chunk=chunk), whole_filter)
    # with gradients the chunk is ignored (training needs the whole graph's activations)
    scores = gnn(x, edge_attr, edges, chunk=64)
    assert scores.requires_grad
    torch.testing.assert_close(scores.detach(), whole)


def test_bf16_autocast_runs_and_stays_close() -> None:
    torch.manual_seed(2)
    gnn = InteractionGNN(3, hidden=32, n_iterations=2)
    x, edge_attr = torch.randn(100, 3), torch.randn(300, 6)
    edges = torch.randint(0, 100, (2, 300))
    ref = torch.sigmoid(gnn(x, edge_attr, edges))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = torch.sigmoid(gnn(x, edge_attr, edges).float())
    assert (low - ref).abs().max() < 0.05


def test_bad_model_configs() -> None:
    with pytest.raises(ConfigError, match="model.graph: unknown keys"):
        InteractionGNNTracker(graph={"pt_cut": 1.0})
    with pytest.raises(ConfigError, match="model.tracks.method"):
        InteractionGNNTracker(tracks={"method": "dbscan"})
    with pytest.raises(ConfigError, match="must be >= 1"):
        InteractionGNN(3, n_iterations=0)
    with pytest.raises(ConfigError, match="model.inference_chunk"):
        InteractionGNNTracker(inference_chunk=0)
