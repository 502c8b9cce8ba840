"""Masked and packed attention: padding never leaks into real tokens; all layouts agree."""

from __future__ import annotations

import pytest
import torch

from hepexp.nn.attention import (
    AttentionContext,
    Packing,
    SetTransformer,
    document_block_mask,
    flex_length,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")

LENGTHS = [37, 130, 5, 201, 64]


def _batch(lengths=LENGTHS, extra: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n = max(lengths) + extra
    x = torch.randn(len(lengths), n, 3, generator=gen)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    return x, mask


def _model(**kw) -> SetTransformer:
    torch.manual_seed(0)
    return SetTransformer(3, 4, dim=32, layers=2, heads=4, ffn=64, **kw).eval()


def test_padding_content_and_length_do_not_change_real_outputs() -> None:
    model = _model()
    x, mask = _batch(extra=3)
    with torch.no_grad():
        ref = model(x, mask)
        noisy = x.clone()
        noisy[~mask] = torch.randn(int((~mask).sum()), 3) * 1e3
        assert torch.equal(model(noisy, mask)[mask], ref[mask])
        longer_x = torch.cat([x, torch.randn(len(x), 50, 3)], 1)
        longer_m = torch.cat([mask, torch.zeros(len(x), 50, dtype=torch.bool)], 1)
        torch.testing.assert_close(model(longer_x, longer_m)[longer_m], ref[mask])
        # each event alone, without any padding or mask, gives the same outputs
        for i, n in enumerate(LENGTHS):
            alone = model(x[i : i + 1, :n])
            torch.testing.assert_close(alone[0], ref[i, :n], atol=2e-5, rtol=1e-4)
    assert (ref[~mask] == 0).all(), "padding outputs are zero"


@pytest.mark.parametrize("kernel", ["loop", "dense", "flex"])
def test_packed_equals_padded(kernel: str) -> None:
    model = _model()
    x, mask = _batch()
    with torch.no_grad():
        ref = model(x, mask, layout="padded")
        out = model(x, mask, layout="packed", packed_kernel=kernel)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_packed_gradients_equal_padded() -> None:
    x, mask = _batch()
    target = torch.randn(*mask.shape, 4)
    grads = {}
    for layout in ("padded", "packed"):
        model = _model(dropout=0.0)
        model.train()
        out = model(x, mask, layout=layout, packed_kernel="loop")
        ((out - target)[mask] ** 2).mean().backward()
        grads[layout] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["packed"], grads["padded"], atol=1e-6, rtol=1e-4)


def test_packing_round_trip() -> None:
    x, mask = _batch()
    packing = Packing.from_mask(mask)
    assert packing.total == sum(LENGTHS)
    assert packing.offsets.tolist() == [0, 37, 167, 172, 373, 437]
    packed = packing.pack(x)
    torch.testing.assert_close(packed, torch.cat([x[i, :n] for i, n in enumerate(LENGTHS)]))
    back = packing.unpack(packed)
    assert torch.equal(back[mask], x[mask]) and (back[~mask] == 0).all()


def test_document_block_mask_matches_block_diagonal() -> None:
    block = 16
    doc = torch.repeat_interleave(torch.arange(4), torch.tensor([10, 40, 3, 43]))
    mask = document_block_mask(doc.to(torch.int32), block=block)
    dense = mask.to_dense()[0, 0].bool()  # (blocks, blocks): block pair computed at all
    truth = doc[:, None] == doc[None, :]
    n = len(doc) // block
    needed = truth.view(n, block, n, block).any(dim=(1, 3))
    assert torch.equal(dense, needed), "exactly the block pairs sharing an event are computed"
    full = (mask.full_kv_num_blocks[0, 0] > 0).any()
    assert full, "blocks inside one event skip the per-element mask"
    with pytest.raises(ValueError, match="multiple of"):
        document_block_mask(doc[:-1].to(torch.int32), block=block)


def test_padded_bias_uses_dtype_minimum_and_is_skipped_without_padding() -> None:
    _, mask = _batch()
    ctx = AttentionContext(mask, "padded")
    bias = ctx.key_bias(torch.bfloat16)
    assert bias.dtype == torch.bfloat16 and bias.shape == (len(LENGTHS), 1, 1, mask.shape[1])
    assert (bias[:, 0, 0][~mask] == torch.finfo(torch.bfloat16).min).all()
    assert (
        AttentionContext(torch.ones(2, 8, dtype=torch.bool), "padded").key_bias(torch.float32)
        is None
    )


def test_bad_layout_and_flex_dropout_are_rejected() -> None:
    x, mask = _batch()
    with pytest.raises(ValueError, match="layout"):
        _model()(x, mask, layout="ragged")
    model = _model(attn_dropout=0.1, layout="packed", packed_kernel="flex").train()
    with pytest.raises(ValueError, match="attention dropout"):
        model(x, mask)


def test_flex_length_buckets() -> None:
    assert flex_length(1) == 128 and flex_length(128) == 128 and flex_length(129) == 256
    assert flex_length(20_000) == 20_480 and flex_length(20_481) == 22_528
    for t in range(1, 50_000, 997):
        assert t <= flex_length(t) <= max(128 * -(-t // 128), int(t * 1.125) + 128 * 16)
        assert flex_length(t) % 128 == 0


@pytest.mark.slow
def test_compiled_flex_on_cpu_matches_padded_and_reuses_kernels() -> None:
    """The GPU path (compiled FlexAttention), run through Inductor on CPU: one static kernel
    per length bucket, reused by later batches of that bucket."""
    import torch._dynamo

    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]
    before = graphs["unique_graphs"]
    model = _model(compile_flex=True)
    batches = [LENGTHS, [300, 12, 77], [400, 400, 400], [9, 250, 180, 40, 700]]
    assert [flex_length(sum(b)) for b in batches] == [512, 512, 1280, 1280]
    with torch.no_grad():
        for seed, lengths in enumerate(batches):
            x, mask = _batch(lengths, seed=seed)
            out = model(x, mask, layout="packed", packed_kernel="flex")
            torch.testing.assert_close(out, model(x, mask, layout="padded"), atol=3e-5, rtol=1e-4)
    assert graphs["unique_graphs"] - before == 2, "one kernel per length bucket"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_padded_and_packed_flex_agree_and_train() -> None:
    torch.manual_seed(0)
    model = SetTransformer(3, 4, dim=64, layers=2, heads=8, ffn=128, dropout=0.0).cuda()
    x, mask = _batch([300, 120, 517, 64, 8])
    x, mask = x.cuda(), mask.cuda()
    outs, grads = {}, {}
    for layout in ("padded", "packed"):
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x, mask, layout=layout, packed_kernel="flex")
        out.float()[mask].square().mean().backward()
        outs[layout] = out.float()
        grads[layout] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(outs["packed"], outs["padded"], atol=5e-2, rtol=5e-2)
    assert torch.isfinite(grads["packed"]).all() and torch.isfinite(grads["padded"]).all()
    cos = torch.nn.functional.cosine_similarity(grads["packed"], grads["padded"], dim=0)
    assert cos > 0.99
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        noisy = x.clone()
        noisy[~mask] = 1e3
        torch.testing.assert_close(
            model(noisy, mask).float()[mask], model(x, mask).float()[mask], atol=0, rtol=0
        )


def test_geometric_attention_layouts_agree_and_prefer_similar_tokens() -> None:
    torch.manual_seed(0)
    model = SetTransformer(3, 4, dim=32, layers=2, heads=4, ffn=64, geometry_dims=4).eval()
    x, mask = _batch()
    geometry = torch.nn.functional.normalize(torch.randn(*mask.shape, 4), dim=-1)
    with torch.no_grad():
        ref = model(x, mask, geometry=geometry)
        for kernel in ("loop", "dense", "flex"):
            out = model(x, mask, layout="packed", packed_kernel=kernel, geometry=geometry)
            torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
        noisy = geometry.clone()
        noisy[~mask] = 7.0
        torch.testing.assert_close(model(x, mask, geometry=noisy)[mask], ref[mask])
    # the sharpest head at init attends (almost) only to tokens of the same direction
    attn = model.layers[0].attn
    u = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0]]), dim=-1)
    u = torch.cat([u, torch.nn.functional.normalize(torch.tensor([[0.0, 1, 0, 0]]), dim=-1)])
    gain = attn.geometry_log_gain.exp()
    assert gain[0] < gain[-1] and gain[-1] > 100
    logits = gain[-1] * (u @ u.T) / attn.padded_head_dim**0.5
    assert torch.softmax(logits, -1)[0, 2] < 1e-6
    with pytest.raises(ValueError, match="geometry"):
        model(x, mask)
