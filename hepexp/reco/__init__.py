"""Reconstruction: turning model outputs into tracks (clustering, graph and track building)."""
