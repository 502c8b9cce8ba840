"""Transformer encoder over variable-length sets (hits of events), padded or packed.

Two layouts of a batch of events, selected per forward call:

- ``padded``: ``(B, L, d)`` with a key-padding mask. Attention is
  :func:`torch.nn.functional.scaled_dot_product_attention` with an additive mask in the
  activations' dtype (a fused memory-efficient kernel on GPU; with no padding at all, no mask,
  so the flash kernel is eligible). With padding, ``L`` is rounded up to a multiple of 8, the
  alignment the fused kernels want.
- ``packed``: the real tokens of all events concatenated into one sequence ``(1, T, d)``; a
  token attends only to tokens of its own event (block-diagonal mask). Token-wise layers run
  on real tokens only (no padding work). Kernels (``auto``: flex on CUDA, loop on CPU):

  - ``flex``: FlexAttention with a :class:`BlockMask` built directly from the event
    boundaries (no T x T mask is ever materialised); compiled with ``torch.compile``
    (``compile="auto"``: on CUDA), which gives a fused kernel that skips blocks of other events.
    ``T`` is padded up to a bucket (:func:`flex_length`) so that the static-shape kernels are
    reused from batch to batch.
  - ``loop``: one unmasked SDPA call per event on its slice of the packed sequence (fast on CPU,
    where fused varlen kernels do not exist).
  - ``dense``: SDPA with a dense ``(T, T)`` block-diagonal boolean mask (a reference; small
    ``T`` only).

Query rows always see at least one real key (every event has at least one token), so no
softmax row is empty. Padding keys get the most negative finite value of the dtype (not
``-inf``), so even an all-padding sample gives finite outputs and gradients.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hepexp.errors import ConfigError

Layout = Literal["padded", "packed"]
PackedKernel = Literal["auto", "flex", "loop", "dense"]
FLEX_BLOCK = 128
#: smallest head dimension of the compiled FlexAttention kernels (smaller ones are zero-padded)
FLEX_MIN_HEAD_DIM = 16
PAD_MULTIPLE = 8


@dataclass
class Packing:
    """Where the real tokens of a padded ``(B, L)`` batch go in a packed sequence.

    Tokens are packed event by event in their padded order; ``offsets`` (B + 1,) are the start
    of each event in the packed sequence (``offsets[-1] = T``).
    """

    index: torch.Tensor  # (T,) flat index into B * L of each real token
    doc: torch.Tensor  # (T,) event number of each token
    offsets: torch.Tensor  # (B + 1,) int64, on the CPU
    batch: int
    length: int

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> Packing:
        """Packing of the True entries of a ``(B, L)`` boolean mask."""
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a (B, L) bool tensor, got {mask.dtype} {mask.shape}")
        b, length = mask.shape
        flat = mask.reshape(-1)
        index = torch.nonzero(flat, as_tuple=False).squeeze(1)
        doc = torch.div(index, length, rounding_mode="floor")
        counts = mask.sum(1).cpu()
        offsets = torch.zeros(b + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(index=index, doc=doc, offsets=offsets, batch=b, length=length)

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, C)`` -> ``(T, C)``: the real tokens."""
        return x.reshape(self.batch * self.length, *x.shape[2:])[self.index]

    def unpack(self, y: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``(T, C)`` -> ``(B, L, C)`` with ``fill`` at padding."""
        out = y.new_full((self.batch * self.length, *y.shape[1:]), fill)
        out[self.index] = y
        return out.reshape(self.batch, self.length, *y.shape[1:])


def document_block_mask(doc: torch.Tensor, block: int = FLEX_BLOCK):
    """FlexAttention :class:`BlockMask` letting each token attend only to its own document.

    ``doc`` (T,) holds non-decreasing document numbers; ``T`` must be a multiple of ``block``.
    Block pairs whose document ranges overlap are kept; pairs inside a single shared document
    are "full" (no per-element mask needed), the others partial (``mask_mod`` applies).
    """
    from torch.nn.attention.flex_attention import BlockMask

    t = doc.shape[0]
    if t % block:
        raise ValueError(f"document_block_mask: length {t} is not a multiple of {block}")
    blocks = doc.view(-1, block)
    first, last = blocks[:, 0], blocks[:, -1]
    touch = (first[None, :] <= last[:, None]) & (last[None, :] >= first[:, None])
    single = first == last
    full = single[:, None] & single[None, :] & (first[:, None] == first[None, :])
    partial = touch & ~full

    def as_kv(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num = flags.sum(-1).to(torch.int32)
        idx = torch.argsort((~flags).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return num[None, None], idx[None, None].contiguous()

    def same_doc(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    kv_num, kv_idx = as_kv(partial)
    full_num, full_idx = as_kv(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=same_doc, seq_lengths=(t, t)
    )


def flex_length(t: int, block: int = FLEX_BLOCK, steps_per_octave: int = 8) -> int:
    """``t`` rounded up to a bucket: a multiple of ``block`` and of 1/``steps_per_octave`` of
    the power of two below ``t``, so that compiled kernels (static shapes) are reused across
    batches of slightly different sizes, at most 1/``steps_per_octave`` of padding."""
    blocks = max(1, -(-t // block))
    granule = 1 << max(0, blocks.bit_length() - 1 - int(math.log2(steps_per_octave)))
    return -(-blocks // granule) * granule * block


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # one static kernel per bucket of flex_length; allow enough of them
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


def _flex(q, k, v, block_mask, compile_flex: bool):
    """FlexAttention with SDPA's default scale; head dimensions below the compiled kernel's
    minimum (16) are zero-padded, which leaves scores and outputs unchanged."""
    from torch.nn.attention.flex_attention import flex_attention

    fn = _compiled_flex() if compile_flex else flex_attention
    e = q.shape[-1]
    if e < FLEX_MIN_HEAD_DIM:
        q, k, v = (F.pad(a, (0, FLEX_MIN_HEAD_DIM - e)) for a in (q, k, v))
    return fn(q, k, v, block_mask=block_mask, scale=e**-0.5)[..., :e]


class AttentionContext:
    """Everything the layers need to attend within events, built once per forward pass."""

    def __init__(
        self,
        mask: torch.Tensor,
        layout: Layout,
        kernel: PackedKernel = "flex",
        compile_flex: bool | Literal["auto"] = "auto",
    ) -> None:
        if layout not in ("padded", "packed"):
            raise ConfigError(f"attention layout must be 'padded' or 'packed', got {layout!r}")
        if kernel not in ("flex", "loop", "dense"):
            raise ConfigError(f"packed kernel must be 'flex', 'loop' or 'dense', got {kernel!r}")
        self.layout = layout
        self.kernel = kernel
        self.mask = mask
        #: per-token geometry for geometric attention: (B, 1, L, G) padded, (1, 1, T, G) packed
        self.geometry: torch.Tensor | None = None
        self.bias_cache: dict[torch.dtype, torch.Tensor | None] = {}
        if layout == "packed":
            self.packing = Packing.from_mask(mask)
            if kernel == "flex":
                self.compile_flex = mask.is_cuda if compile_flex == "auto" else bool(compile_flex)
                t = self.packing.total
                self.padded_total = flex_length(t)
                # every block of padding is a document of its own: it costs one block pair
                pad_doc = self.packing.batch + torch.arange(
                    self.padded_total - t, device=mask.device
                ).div(FLEX_BLOCK, rounding_mode="floor")
                doc = torch.cat([self.packing.doc, pad_doc]).to(torch.int32)
                self.block_mask = document_block_mask(doc)
            elif kernel == "dense":
                doc = self.packing.doc
                self.dense_mask = doc[:, None] == doc[None, :]

    def key_bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive (B, 1, 1, L) key mask for the padded layout; None without padding."""
        if dtype not in self.bias_cache:
            if bool(self.mask.all()):
                self.bias_cache[dtype] = None
            else:
                bias = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
                bias.masked_fill_(~self.mask, torch.finfo(dtype).min)
                self.bias_cache[dtype] = bias[:, None, None, :]
        return self.bias_cache[dtype]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float):
        """Attention of ``(B, H, L, Dh)`` (padded) or ``(1, H, T, Dh)`` (packed) tensors."""
        if self.layout == "padded":
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=self.key_bias(q.dtype), dropout_p=dropout
            )
        if self.kernel == "flex":
            if dropout > 0:
                raise ConfigError("FlexAttention has no attention dropout; set attn_dropout: 0")
            t, pad = q.shape[2], self.padded_total - q.shape[2]
            if pad:
                q, k, v = (F.pad(a, (0, 0, 0, pad)) for a in (q, k, v))
            return _flex(q, k, v, self.block_mask, self.compile_flex)[:, :, :t]
        if self.kernel == "dense":
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=self.dense_mask, dropout_p=dropout
            )
        # split, not slicing: the backward of a split concatenates the parts' gradients, while
        # each slice's backward would fill a zero tensor of the whole sequence (O(events x T))
        sizes = self.packing.offsets.diff().tolist()
        parts = [
            F.scaled_dot_product_attention(qe, ke, ve, dropout_p=dropout)
            for n, qe, ke, ve in zip(
                sizes, q.split(sizes, 2), k.split(sizes, 2), v.split(sizes, 2), strict=True
            )
            if n
        ]
        return torch.cat(parts, dim=2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection.

    With ``geometry_dims`` > 0, every head also compares per-token geometry vectors ``u``
    (``ctx.geometry``, e.g. unit direction vectors of hits): ``g_h u_i`` and ``u_j`` are
    appended to the queries and keys, which adds ``g_h u_i . u_j`` (a learnable gain per head,
    initialised from weak to sharp) to the attention logits, a similarity prior computed
    inside the same fused kernels. Head dimensions are zero-padded to a multiple of 8.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        geometry_dims: int = 0,
        geometry_gain: tuple[float, float] = (2.0, 1000.0),
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"attention: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.geometry_dims = geometry_dims
        head_dim = dim // heads
        self.padded_head_dim = head_dim + geometry_dims
        if geometry_dims:
            self.padded_head_dim = -(-self.padded_head_dim // PAD_MULTIPLE) * PAD_MULTIPLE
            lo, hi = geometry_gain
            gains = torch.logspace(math.log10(lo), math.log10(hi), heads)
            self.geometry_log_gain = nn.Parameter(gains.log())

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        head_dim = q.shape[-1]
        if self.geometry_dims:
            if ctx.geometry is None or ctx.geometry.shape[-1] != self.geometry_dims:
                raise ValueError(
                    f"attention: expected geometry with {self.geometry_dims} features per token"
                )
            geo = ctx.geometry.to(q.dtype).expand(-1, self.heads, -1, -1)
            gain = self.geometry_log_gain.exp().to(q.dtype)[None, :, None, None]
            pad = self.padded_head_dim - head_dim - self.geometry_dims
            q = F.pad(torch.cat([q, geo * gain], -1), (0, pad))
            k = F.pad(torch.cat([k, geo], -1), (0, pad))
            v = F.pad(v, (0, self.padded_head_dim - head_dim))
        o = ctx.attend(q, k, v, self.dropout if self.training else 0.0)[..., :head_dim]
        return self.out(o.transpose(1, 2).reshape(b, n, d))


class ReGLU(nn.Module):
    """``a * relu(b)`` of the two halves of the last dimension (a gated linear unit)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return a * F.relu(b)


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer (as ``nn.TransformerEncoderLayer``, ReLU).

    ``ffn_gate`` replaces the ReLU feed-forward block by a gated one (ReGLU), which can form
    products of features (e.g. of a token's own direction and its neighbours' mean).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn: int,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        geometry_dims: int = 0,
        ffn_gate: bool = False,
    ) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, attn_dropout, geometry_dims)
        if ffn_gate:
            self.ffn = nn.Sequential(
                nn.Linear(dim, 2 * ffn), ReGLU(), nn.Dropout(dropout), nn.Linear(ffn, dim)
            )
        else:
            self.ffn = nn.Sequential(
                nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim)
            )
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = self.norm1(x + self.drop1(self.attn(x, ctx)))
        return self.norm2(x + self.drop2(self.ffn(x)))


class SetTransformer(nn.Module):
    """Linear embedding -> encoder layers -> Linear head, per token, no positional encoding.

    ``forward(x, mask)`` takes a padded ``(B, L, C_in)`` batch and a ``(B, L)`` mask (True for
    real tokens) and returns ``(B, L, C_out)``, zero at padding, whichever ``layout`` runs
    inside. Outputs at real tokens do not depend on padding (content or length).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        dim: int = 64,
        layers: int = 6,
        heads: int = 8,
        ffn: int = 128,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        layout: Layout = "padded",
        packed_kernel: PackedKernel = "flex",
        compile_flex: bool | Literal["auto"] = "auto",
        geometry_dims: int = 0,
        ffn_gate: bool = False,
    ) -> None:
        super().__init__()
        self.geometry_dims = geometry_dims
        self.layout = layout
        self.packed_kernel = packed_kernel
        self.compile_flex = compile_flex
        self.embed = nn.Linear(in_features, dim)
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, ffn, dropout, attn_dropout, geometry_dims, ffn_gate)
            for _ in range(layers)
        )
        self.head = nn.Linear(dim, out_features)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        layout: Layout | None = None,
        packed_kernel: PackedKernel | None = None,
        geometry: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"x: expected (B, L, features), got shape {tuple(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        layout = layout or self.layout
        kernel = packed_kernel or self.packed_kernel
        if kernel == "auto":
            kernel = "flex" if x.is_cuda else "loop"
        if layout not in ("padded", "packed"):
            raise ConfigError(f"attention layout must be 'padded' or 'packed', got {layout!r}")
        if self.geometry_dims and (geometry is None or geometry.shape[:2] != x.shape[:2]):
            raise ValueError(f"geometry: expected (B, L, {self.geometry_dims}) beside x")
        if layout == "packed":
            ctx = AttentionContext(mask, "packed", kernel, self.compile_flex)
            if geometry is not None and self.geometry_dims:
                ctx.geometry = ctx.packing.pack(geometry)[None, None]
            h = self.embed(ctx.packing.pack(x))[None]
            for layer in self.layers:
                h = layer(h, ctx)
            return ctx.packing.unpack(self.head(h[0]))
        if bool(mask.all()):  # nothing to mask: no bias, the flash kernel is eligible
            ctx = AttentionContext(mask, "padded")
            if geometry is not None and self.geometry_dims:
                ctx.geometry = geometry[:, None]
            h = self.embed(x)
            for layer in self.layers:
                h = layer(h, ctx)
            return self.head(h)
        length = x.shape[1]
        pad = -length % PAD_MULTIPLE
        if pad:
            x, mask = F.pad(x, (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)
            if geometry is not None:
                geometry = F.pad(geometry, (0, 0, 0, pad))
        ctx = AttentionContext(mask, "padded")
        if geometry is not None and self.geometry_dims:
            ctx.geometry = geometry[:, None]
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, ctx)
        return self.head(h)[:, :length] * mask[:, :length, None]
