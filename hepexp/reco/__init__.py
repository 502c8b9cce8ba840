"""Reconstruction: turning model outputs into tracks."""
