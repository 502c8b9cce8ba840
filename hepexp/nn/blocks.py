"""Building blocks shared by several models."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hepexp.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """An activation module from its config name (``tanh``, ``leaky_relu``, ...)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def mlp(
    sizes: Sequence[int],
    act: str = "relu",
    final_activation: bool = False,
    norm: str | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Fully connected network through ``sizes`` (input, hidden..., output).

    ``norm`` is ``None``, ``"batch"`` or ``"layer"``, applied after each hidden Linear.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
    layers: list[nn.Module] = []
    n_linear = len(sizes) - 1
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < n_linear - 1 or final_activation:
            if norm == "batch":
                layers.append(nn.BatchNorm1d(n_out))
            elif norm == "layer":
                layers.append(nn.LayerNorm(n_out))
            elif norm is not None:
                raise ConfigError(f"unknown norm '{norm}'; use null, 'batch' or 'layer'")
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
