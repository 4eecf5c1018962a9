"""gain_scale: rescale rate products taken with a non-standard gain setting (spec 08 §8)."""

from __future__ import annotations

import numpy as np


def gain_scale(values: np.ndarray, *, gain_factor: float, power: int = 1) -> np.ndarray:
    """``values · gain_factor**power`` in the dtype of ``values``.

    Parameters
    ----------
    values : ndarray, (y, x) or (integration, y, x), float32
        ``data``/``err`` (power 1, DN/s) or ``var_poisson``/``var_rnoise`` (power 2, (DN/s)²).
    gain_factor : float
        GAINFACT.
    power : {1, 2}

    Returns
    -------
    ndarray, same shape and dtype
    """
    factor = float(gain_factor) ** power
    # a Python float scalar keeps float32 arithmetic, like an in-place float32 multiply
    return values * factor
