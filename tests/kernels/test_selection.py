"""The quickselect the kernels' medians use, against numpy's sort on random buffers with
ties, small counts and trailing values that must stay untouched."""

from __future__ import annotations

import numpy as np
import pytest

from daskramp.kernels.selection import lower_of_selected, select


@pytest.mark.parametrize("seed", range(4))
def test_select_is_the_kth_smallest_and_partitions_the_buffer(seed):
    rng = np.random.default_rng(seed)
    for t in range(2000):
        m = int(rng.integers(1, 60))
        if t % 2:
            v = rng.integers(0, int(rng.integers(1, 8)), m).astype(np.float32)  # many ties
        else:
            v = rng.normal(size=m).astype(np.float32)
        k = int(rng.integers(0, m))
        tail = rng.normal(size=3).astype(np.float32)
        w = np.concatenate([v, tail])
        got = select(w, m, k)
        want = np.sort(v)
        assert got == want[k]
        assert (w[:k] <= got).all() and (w[k + 1:m] >= got).all()
        np.testing.assert_array_equal(np.sort(w[:m]), want)
        np.testing.assert_array_equal(w[m:], tail)
        if k > 0:
            assert lower_of_selected(w, k) == want[k - 1]
