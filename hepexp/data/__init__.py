"""Data sources. Each subpackage reads one real format and simulates the same format."""
