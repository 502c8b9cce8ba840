"""Layers shared by the models: MLP blocks, attention, scatter reductions, the vector
quantizer. They depend on torch (and hepexp.errors) only."""
