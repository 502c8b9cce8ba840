"""Turning model outputs into tracks: graph building and track building."""
