"""Metrics: tracking scores, resolutions, distribution distances."""
