"""What a job costs the machine."""

from __future__ import annotations

import sys


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux, macOS; NaN elsewhere)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 30 if sys.platform == "darwin" else 1 << 20)  # bytes on macOS, else KiB
