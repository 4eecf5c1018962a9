"""What the step wrappers share: input conversions, reference images, status keywords.

* :func:`to_float32` — uint16 raw ramp (and zero frame) → float32 DN, lazily;
* :func:`as_image` / :func:`as_planes` — a reference array (numpy or ``xr.DataArray``) checked
  against the exposure and returned as a DataArray on the exposure's ``y``/``x`` coordinates;
* :func:`apply_image` — a small numpy function of 2-D arrays (pixeldq updates) applied lazily;
* :func:`with_status` — a new Dataset with a step status keyword set;
* :func:`zeroframe_blocks` — a zero-frame kernel applied through the ramp doorway.

Nothing here computes exposure-sized data.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..dims import DATA, FLOAT_DTYPE, GROUP, IMAGE_DIMS, ZEROFRAME, X, Y
from ._apply import map_ramp_blocks

COMPLETE = "COMPLETE"
SKIPPED = "SKIPPED"


def to_float32(ds: xr.Dataset) -> xr.Dataset:
    """Return ``ds`` with ``data`` (and ``zeroframe``) cast to float32 DN (lazy, no copy if already).

    The uncal file stores uint16 DN; every calibration step after group_scale works on float32.
    """
    out = ds.copy()
    for name in (DATA, ZEROFRAME):
        if name in out and out[name].dtype != FLOAT_DTYPE:
            out[name] = out[name].astype(FLOAT_DTYPE)
    return out


def _check_coords(ref: xr.DataArray, ds: xr.Dataset, name: str) -> None:
    for dim in (Y, X):
        if dim in ref.coords and dim in ds.coords:
            # coordinates are small 1-D vectors; comparing them loads no image data
            if not np.array_equal(np.asarray(ref[dim].values), np.asarray(ds[dim].values)):
                raise ValueError(
                    f"{name}: {dim} coordinates do not match the exposure "
                    "(cut the reference to the science subarray first)"
                )


def as_image(ref, ds: xr.Dataset, name: str, *, dtype=None) -> xr.DataArray:
    """A ``(y, x)`` reference image as a DataArray on the exposure's coordinates.

    Parameters
    ----------
    ref : numpy array, dask array or xarray.DataArray
        2-D image; a DataArray must have dims ``(y, x)``.
    ds : xarray.Dataset
        The exposure it applies to.
    name : str
        Used in error messages.
    dtype : numpy dtype, optional
        Cast (lazily) to this dtype.
    """
    shape = (ds.sizes[Y], ds.sizes[X])
    if isinstance(ref, xr.DataArray):
        if ref.dims != IMAGE_DIMS:
            raise ValueError(f"{name}: dims {ref.dims}, expected {IMAGE_DIMS}")
        _check_coords(ref, ds, name)
        arr = ref.data
    else:
        arr = ref if hasattr(ref, "chunks") and hasattr(ref, "dask") else np.asarray(ref)
    if tuple(arr.shape) != shape:
        raise ValueError(f"{name}: shape {tuple(arr.shape)} does not match the science image {shape}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        arr = arr.astype(dtype)
    return xr.DataArray(arr, dims=IMAGE_DIMS, coords={Y: ds[Y], X: ds[X]}, name=name)


def as_planes(ref, ds: xr.Dataset, name: str) -> tuple[str, object]:
    """A ``(plane, y, x)`` reference cube: returns ``(leading dim name, array)``.

    The array is the underlying numpy or dask array (not loaded); its image shape must equal
    the science image.
    """
    shape = (ds.sizes[Y], ds.sizes[X])
    if isinstance(ref, xr.DataArray):
        if ref.ndim != 3 or ref.dims[1:] != IMAGE_DIMS:
            raise ValueError(f"{name}: dims {ref.dims}, expected (plane, y, x)")
        _check_coords(ref, ds, name)
        lead, arr = ref.dims[0], ref.data
    else:
        arr = ref if hasattr(ref, "chunks") and hasattr(ref, "dask") else np.asarray(ref)
        lead = "plane"
        if arr.ndim != 3:
            raise ValueError(f"{name}: {arr.ndim}-D array, expected 3-D (plane, y, x)")
    if tuple(arr.shape[1:]) != shape:
        raise ValueError(
            f"{name}: image shape {tuple(arr.shape[1:])} does not match the science image {shape}"
        )
    return lead, arr


def apply_image(func, *images: xr.DataArray, **kwargs) -> xr.DataArray:
    """Apply a numpy function of 2-D ``(y, x)`` arrays lazily (element-wise functions only).

    The functions used here are written with numpy ufuncs and ``np.where`` only, so dask arrays
    pass straight through them (NEP 18) and stay lazy.
    """
    return xr.apply_ufunc(func, *images, dask="allowed", kwargs=kwargs, keep_attrs=False)


def with_status(ds: xr.Dataset, key: str, status: str, **updates) -> xr.Dataset:
    """A shallow copy of ``ds`` with variables replaced by ``updates`` and ``attrs[key] = status``.

    A replacement with the dims and shape of the variable it replaces keeps that variable's
    attributes and takes only its array (``Dataset.copy(data=...)``: no alignment; the
    wrappers make their outputs on the input's own grid); its encoding is dropped, since it
    described the old array.  Other updates are assigned (aligned) as usual.
    """
    same = {name: value.data for name, value in updates.items()
            if isinstance(value, xr.DataArray) and name in ds.data_vars
            and value.dims == ds[name].dims and value.shape == ds[name].shape}
    if same:
        out = ds.copy(data={name: same.get(name, var.data) for name, var in ds.data_vars.items()})
        for name in same:
            out.variables[name].encoding = {}
    else:
        out = ds.copy()
    for name, value in updates.items():
        if name in same:
            continue
        if name in ds and isinstance(value, xr.DataArray):
            value = value.assign_attrs(ds[name].attrs)
        out[name] = value
    out.attrs = {**ds.attrs, key: status}
    return out


def zeroframe_blocks(kernel_fn, zeroframe: xr.DataArray, *images: xr.DataArray, dtype, **kw):
    """Run a (integration, y, x) zero-frame kernel through the ramp doorway.

    The zero frame becomes a one-group ramp so it carries its own chunks as the template.
    """
    z4 = zeroframe.expand_dims({GROUP: 1}, axis=1)
    out = map_ramp_blocks(kernel_fn, z4, *images, dtype=dtype, **kw)
    return out.isel({GROUP: 0}, drop=True).assign_attrs(zeroframe.attrs)
