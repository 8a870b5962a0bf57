"""The machine a measurement ran on, in words: the label every absolute time carries.

>>> cpu_threads() >= 1
True
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """The CPU model, its cores and, when torch sees one, the GPU: the label of absolute times."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    label = f"{cpu}, {cpu_threads()} cores"
    if torch.cuda.is_available():
        label += f", {torch.cuda.get_device_name(0)}"
    return label


def cpu_threads() -> int:
    """Cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
