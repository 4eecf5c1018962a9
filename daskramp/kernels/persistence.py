"""persistence: flag the groups that follow a saturation (spec 12 §4, spec 06; jwst 3.0).

jwst 3.0 no longer models trapped charge: the step reads no reference file and only flags.
Each pixel carries a *window end* ``W`` (Unix seconds; 0 = no window open) from group to
group and from integration to integration.  At every group ``g`` of integration ``i``, with
``now = t_i + (g + 1)·TGROUP`` (``t_i`` the integration start, the sum accumulated group by
group) and ``end = now + persistence_time``, in this order:

1. a window that ended before ``now`` is closed (``W < now`` → 0);
2. the pixel's first SATURATED group of the integration (strictly: every group while exactly
   one of the integration's groups so far is SATURATED) (re)opens it: ``W = end``;
3. with ``dn_threshold``, ``data > dn_threshold`` opens a window where none is open
   (``W > 0`` false);
4. a window ending after ``end`` (it would have opened before the group was read) is closed;
5. the group gets PERSISTENCE (| DO_NOT_USE with ``persistence_dnu``) while ``W > 0``.

The SATURATED count restarts at every integration; ``W`` does not, so a window opened near
the end of an integration flags the first groups of the next one.  The official step runs
on one uncal segment and starts with every window closed; the caller says where that
happens (``reset``).  The time arithmetic is the official float64 arithmetic, operation for
operation, so windows that end exactly on a group time fall on the same side.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dq import DO_NOT_USE, PERSISTENCE, SATURATED


@numba.njit(cache=True, nogil=True)
def _scan(data, groupdq, int_start, reset, group_time, persistence_time, use_threshold,
          threshold, flag, windows, out):
    """Plane by plane (the frames are contiguous), the rules of the module docstring;
    ``windows`` (y, x) float64 is updated in place and ``out`` filled."""
    nint, ngroup, ny, nx = groupdq.shape
    count = np.zeros((ny, nx), np.uint8)
    for i in range(nint):
        if reset[i]:
            windows[:, :] = 0.0
        count[:, :] = 0
        now = int_start[i]
        for g in range(ngroup):
            now = now + group_time
            end = now + persistence_time
            for y in range(ny):
                for x in range(nx):
                    w = windows[y, x]
                    if w < now:
                        w = 0.0
                    q = groupdq[i, g, y, x]
                    if q & SATURATED and count[y, x] < 2:
                        count[y, x] += 1
                    if count[y, x] == 1:
                        w = end
                    if use_threshold and not w > 0.0 and data[i, g, y, x] > threshold:
                        w = end
                    if w != 0.0 and w - end > 0.0:
                        w = 0.0
                    windows[y, x] = w
                    out[i, g, y, x] = q | flag if w > 0.0 else q


def flag_persistence(
    data: np.ndarray,
    groupdq: np.ndarray,
    int_start: np.ndarray,
    *,
    group_time: float,
    persistence_time: float,
    dn_threshold: float | None = None,
    persistence_dnu: bool = False,
    reset: np.ndarray | None = None,
    windows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """New ``groupdq`` with PERSISTENCE set, and the window ends after the last integration.

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32, DN
        Only read with ``dn_threshold``.
    groupdq : ndarray, (integration, group, y, x), uint8
    int_start : ndarray, (integration,), float64, Unix seconds
        Start of each integration (the first group is read one ``group_time`` later).
    group_time : float, s
        TGROUP.
    persistence_time : float, s
        Length of a window (the official parameter is an integer > 0).
    dn_threshold : float or None, DN
        Compared with the float32 data in float32 (the threshold rounded to float32), as the
        official comparison of a float32 array with a Python float is.
    persistence_dnu : bool
        Also set DO_NOT_USE on the flagged groups.
    reset : ndarray, (integration,), bool, optional
        Close every window before these integrations (the start of each uncal segment).
    windows : ndarray, (y, x), float64, optional
        Window ends (Unix s, 0 = none) before the first integration; default all closed.

    Returns
    -------
    (ndarray (integration, group, y, x) uint8, ndarray (y, x) float64)
    """
    nint = groupdq.shape[0]
    gdq = np.ascontiguousarray(groupdq, dtype=np.uint8)
    start = np.ascontiguousarray(int_start, dtype=np.float64).reshape(-1)
    if start.shape != (nint,):
        raise ValueError(f"int_start has {start.size} values for {nint} integrations")
    rst = np.zeros(nint, np.bool_) if reset is None else np.ascontiguousarray(reset, dtype=np.bool_).reshape(-1)
    if rst.shape != (nint,):
        raise ValueError(f"reset has {rst.size} values for {nint} integrations")
    state = np.zeros(gdq.shape[2:], np.float64) if windows is None else np.array(windows, np.float64)
    if state.shape != gdq.shape[2:]:
        raise ValueError(f"windows has shape {state.shape}, expected {gdq.shape[2:]}")
    use = dn_threshold is not None
    with np.errstate(over="ignore"):
        # beyond the float32 range the threshold becomes ±inf, as the official cast does
        thr = np.float32(dn_threshold if use else 0.0)
    values = np.ascontiguousarray(data, dtype=np.float32) if use else np.zeros((1, 1, 1, 1), np.float32)
    if use and values.shape != gdq.shape:
        raise ValueError(f"data has shape {values.shape}, groupdq {gdq.shape}")
    flag = np.uint8(PERSISTENCE | (DO_NOT_USE if persistence_dnu else 0))
    out = np.empty_like(gdq)
    _scan(values, gdq, start, rst, float(group_time), float(persistence_time), use, thr, flag,
          state, out)
    return out, state


def persistence(
    data: np.ndarray,
    groupdq: np.ndarray,
    int_start: np.ndarray,
    reset: np.ndarray,
    *,
    group_time: float,
    persistence_time: float,
    dn_threshold: float | None = None,
    persistence_dnu: bool = False,
) -> np.ndarray:
    """New ``groupdq`` with PERSISTENCE (| DO_NOT_USE) set; every window closed before the
    block and before each integration where ``reset`` is True.

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32, DN
    groupdq : ndarray, (integration, group, y, x), uint8
    int_start : ndarray, (integration,), float64, Unix seconds
    reset : ndarray, (integration,), bool
    group_time, persistence_time, dn_threshold, persistence_dnu
        As :func:`flag_persistence`.

    Returns
    -------
    ndarray, (integration, group, y, x), uint8
    """
    out, _ = flag_persistence(data, groupdq, int_start, group_time=group_time,
                              persistence_time=persistence_time, dn_threshold=dn_threshold,
                              persistence_dnu=persistence_dnu, reset=reset)
    return out
