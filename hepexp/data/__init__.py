"""Data sources: readers for real formats, built-in simulators, streaming datasets."""
