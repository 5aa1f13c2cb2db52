"""lnbn_utils.timing: the helpers are one object under every name they are known by."""

import lnbn_utils as lu
from lnbn_utils import memory, timing


def test_timing_helpers_importable_from_timing_memory_and_lu():
    for name in (
        "median_time",
        "interleaved_times",
        "cache_sizes",
        "keep_freed_memory",
    ):
        assert getattr(lu, name) is getattr(timing, name) is getattr(memory, name)
