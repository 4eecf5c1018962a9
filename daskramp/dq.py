"""Data-quality bits: the one source of truth for DQ values in daskramp.

Values follow the JWST ``dqflags`` convention (spec 00 §3).  ``pixeldq`` is uint32
(per pixel, time independent); ``groupdq`` is uint8 and only holds the group flags
(all values ≤ 128).
"""

from __future__ import annotations

import numpy as np

#: name -> value for every JWST pixel DQ bit
PIXEL: dict[str, int] = {
    "GOOD": 0,
    "DO_NOT_USE": 1 << 0,
    "SATURATED": 1 << 1,
    "JUMP_DET": 1 << 2,
    "DROPOUT": 1 << 3,
    "OUTLIER": 1 << 4,
    "PERSISTENCE": 1 << 5,
    "AD_FLOOR": 1 << 6,
    "CHARGELOSS": 1 << 7,
    "RESERVED": 1 << 8,
    "NON_SCIENCE": 1 << 9,
    "DEAD": 1 << 10,
    "HOT": 1 << 11,
    "WARM": 1 << 12,
    "LOW_QE": 1 << 13,
    "RC": 1 << 14,
    "TELEGRAPH": 1 << 15,
    "NONLINEAR": 1 << 16,
    "BAD_REF_PIXEL": 1 << 17,
    "NO_FLAT_FIELD": 1 << 18,
    "NO_GAIN_VALUE": 1 << 19,
    "NO_LIN_CORR": 1 << 20,
    "NO_SAT_CHECK": 1 << 21,
    "UNRELIABLE_BIAS": 1 << 22,
    "UNRELIABLE_DARK": 1 << 23,
    "UNRELIABLE_SLOPE": 1 << 24,
    "UNRELIABLE_FLAT": 1 << 25,
    "OPEN": 1 << 26,
    "ADJ_OPEN": 1 << 27,
    "FLUX_ESTIMATED": 1 << 28,
    "MSA_FAILED_OPEN": 1 << 29,
    "OTHER_BAD_PIXEL": 1 << 30,
    "REFERENCE_PIXEL": 1 << 31,
}

#: the subset of flags that live in the uint8 ``groupdq``
GROUP: dict[str, int] = {
    k: PIXEL[k]
    for k in (
        "GOOD",
        "DO_NOT_USE",
        "SATURATED",
        "JUMP_DET",
        "DROPOUT",
        "PERSISTENCE",
        "AD_FLOOR",
        "CHARGELOSS",
    )
}

GOOD = 0
DO_NOT_USE = PIXEL["DO_NOT_USE"]
SATURATED = PIXEL["SATURATED"]
JUMP_DET = PIXEL["JUMP_DET"]
DROPOUT = PIXEL["DROPOUT"]
OUTLIER = PIXEL["OUTLIER"]
PERSISTENCE = PIXEL["PERSISTENCE"]
AD_FLOOR = PIXEL["AD_FLOOR"]
CHARGELOSS = PIXEL["CHARGELOSS"]
NON_SCIENCE = PIXEL["NON_SCIENCE"]
DEAD = PIXEL["DEAD"]
HOT = PIXEL["HOT"]
WARM = PIXEL["WARM"]
LOW_QE = PIXEL["LOW_QE"]
NONLINEAR = PIXEL["NONLINEAR"]
BAD_REF_PIXEL = PIXEL["BAD_REF_PIXEL"]
NO_GAIN_VALUE = PIXEL["NO_GAIN_VALUE"]
NO_LIN_CORR = PIXEL["NO_LIN_CORR"]
NO_SAT_CHECK = PIXEL["NO_SAT_CHECK"]
UNRELIABLE_BIAS = PIXEL["UNRELIABLE_BIAS"]
UNRELIABLE_DARK = PIXEL["UNRELIABLE_DARK"]
OTHER_BAD_PIXEL = PIXEL["OTHER_BAD_PIXEL"]
REFERENCE_PIXEL = PIXEL["REFERENCE_PIXEL"]

_BY_VALUE = {v: k for k, v in PIXEL.items() if v}


def dqflags_to_mnemonics(value: int) -> set[str]:
    """Names of the bits set in one DQ value (``0`` → ``{"GOOD"}``)."""
    value = int(value)
    if value < 0 or value >= 1 << 32:
        raise ValueError(f"DQ value {value} does not fit in 32 bits")
    if value == 0:
        return {"GOOD"}
    return {name for bit, name in _BY_VALUE.items() if value & bit}


def interpret_bit_flags(names: str | list[str] | set[str] | int) -> int:
    """Value of a set of DQ names (``"DO_NOT_USE, SATURATED"`` or a list); ints pass through."""
    if isinstance(names, (int, np.integer)):
        return int(names)
    if isinstance(names, str):
        names = [n.strip() for n in names.replace("+", ",").split(",") if n.strip()]
    value = 0
    for n in names:
        key = n.upper()
        if key not in PIXEL:
            raise ValueError(f"unknown DQ flag name {n!r}; known: {', '.join(PIXEL)}")
        value |= PIXEL[key]
    return value


def dq_def_table() -> list[tuple[int, int, str, str]]:
    """Rows (BIT, VALUE, NAME, DESCRIPTION) for a DQ_DEF table in reference files."""
    rows = []
    for name, value in PIXEL.items():
        if value == 0:
            continue
        rows.append((value.bit_length() - 1, value, name, name.replace("_", " ").lower()))
    return rows
