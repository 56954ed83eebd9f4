"""Scoped torch intra-op thread count.

Small models on few shared cores run several times faster with one intra-op thread than with the
default (one per core): the threads spend their time waiting for each other and for other processes.
The setting is process-global in torch, so it is set for a block and restored after it.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` intra-op threads (0: leave the current setting)."""
    if count < 0:
        raise ValueError("count must be >= 0")
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count:
            torch.set_num_threads(previous)
