"""dark_current step wrapper (spec 05).

The DARK is matched to the science timing (extrapolated when too short, NaN → 0, averaged over
NFRAMES with GROUPGAP skipped) as reference-sized work, then subtracted group by group.  The
dark is not cut to subarrays: its image shape must equal the science image.  The Dataset gains
an ``average_dark_current`` variable ``(y, x)`` float32 [e⁻/s] (AVDRKCUR), used by ramp_fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..dims import DATA, FLOAT_DTYPE, GROUP, IMAGE_DIMS, PIXELDQ, X, Y, validate
from ..kernels import dark_current as kernel
from ..params import boolean, floating, output_file
from ._apply import map_ramp_blocks
from ._spec import StepSpec, ref_array
from ._wrapper import COMPLETE, SKIPPED, as_image, as_planes, with_status

STATUS = "S_DARK"
AVERAGE_DARK_CURRENT = "average_dark_current"


@dataclass(frozen=True)
class Params:
    """Parameters of dark_current (official names)."""

    #: FITS file in which to save the frame-averaged dark (None → not saved)
    dark_output: str | None = output_file(None)
    #: mean dark current in e⁻/s for the ramp_fit Poisson term (overrides the DARK file);
    #: daskramp refuses a negative one (it would make the Poisson variance negative)
    average_dark_current: float | None = floating(None, min=0, none=True)
    skip: bool = boolean(False)


def _is_dask(arr) -> bool:
    return hasattr(arr, "dask")


def _provided(arr) -> np.ndarray:
    """``[[True]]`` when an AVDRKCUR image holds anything (a one-chunk block task)."""
    return np.full((1, 1), float(np.sum(arr)) != 0.0)


def _average_dark_current(ds, user, image, keyword):
    """AVDRKCUR (y, x): parameter > DARK 2-D array > DARK header keyword > 0."""
    coords = {Y: ds[Y], X: ds[X]}
    shape = (ds.sizes[Y], ds.sizes[X])
    lazy = _is_dask(ds[DATA].data)

    def full(value):
        if lazy:
            import dask.array as da

            # made by the tasks, not an image shipped inside the graph
            return xr.DataArray(da.full(shape, value, dtype=np.float32, chunks=-1), dims=IMAGE_DIMS,
                                coords=coords)
        return xr.DataArray(np.full(shape, value, np.float32), dims=IMAGE_DIMS, coords=coords)

    if user is not None:
        return full(float(user))
    if image is not None:
        arr = image.data if isinstance(image, xr.DataArray) else image
        if _is_dask(arr) and tuple(arr.shape) == shape:
            # a DARK read by the workers (RefSet.lazy): whether the image holds anything is
            # decided there too, by the same sum as below
            import dask.array as da

            flag = arr.rechunk(-1).map_blocks(_provided, chunks=((1,),) * arr.ndim, dtype=bool)
            img = as_image(arr, ds, "dark_avdrkcur", dtype=np.float32)
            other = full(0.0 if keyword is None else float(keyword))
            return img.copy(data=da.where(flag[0, 0], img.data, other.data))
        if _is_dask(arr):
            # an image of another shape (given by hand): decided here, as before
            arr = np.asarray(arr)
        # an all-zero array means "not provided" in the DARK files; the sum is reference-sized
        if float(np.sum(arr)) != 0.0:
            if tuple(np.shape(arr)) != shape:
                # the official step warns and leaves the current value in place
                if AVERAGE_DARK_CURRENT in ds:
                    return ds[AVERAGE_DARK_CURRENT]
                return full(0.0)
            return as_image(arr, ds, "dark_avdrkcur", dtype=np.float32)
    return full(0.0 if keyword is None else float(keyword))


def dark_current(
    ds: xr.Dataset,
    *,
    dark=None,
    dark_dq=None,
    dark_nframes: int = 1,
    dark_groupgap: int = 0,
    dark_avdrkcur=None,
    dark_avdrkcur_keyword: float | None = None,
    dark_output: str | None = None,
    average_dark_current: float | None = None,
    skip: bool = False,
) -> xr.Dataset:
    """Subtract the dark (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure, float32 DN; NGROUPS, NFRAMES, GROUPGAP from ``ds.attrs``.
    dark : array or xr.DataArray, (planes, y, x), DN
        DARK SCI (NIR 3-D darks); ``None`` → SKIPPED (no AVDRKCUR either).
    dark_dq : array or xr.DataArray, (y, x), uint32, optional
    dark_nframes, dark_groupgap : int
        NFRAMES and GROUPGAP of the DARK header. If the dark averages more frames or skips more
        than the science, the data are left unchanged and the status is SKIPPED.
    dark_avdrkcur : array (y, x), optional
        The DARK file's AVDRKCUR image [e⁻/s].
    dark_avdrkcur_keyword : float, optional
        The DARK header AVDRKCUR keyword [e⁻/s].
    dark_output : str, optional
        Write the frame-averaged dark to this FITS file (reference-sized; computed here).
    average_dark_current : float, optional
        Step parameter [e⁻/s]; takes priority over the DARK values.
    skip : bool

    Returns
    -------
    xarray.Dataset with float32 ``data``, updated ``pixeldq``, ``average_dark_current`` and
    ``attrs["S_DARK"]``.
    """
    validate(ds)
    if skip or dark is None:
        return with_status(ds, STATUS, SKIPPED)
    lead, arr = as_planes(dark, ds, "dark")
    a = ds.attrs
    ngroups, nframes, groupgap = int(a["NGROUPS"]), int(a["NFRAMES"]), int(a["GROUPGAP"])
    avdrk = _average_dark_current(ds, average_dark_current, dark_avdrkcur, dark_avdrkcur_keyword)
    if not kernel.dark_usable(
        nframes=nframes, groupgap=groupgap, dark_nframes=int(dark_nframes), dark_groupgap=int(dark_groupgap)
    ):
        return with_status(ds, STATUS, SKIPPED, **{AVERAGE_DARK_CURRENT: avdrk})
    avg = kernel.prepare_dark(
        arr,
        ngroups=ngroups,
        nframes=nframes,
        groupgap=groupgap,
        dark_nframes=int(dark_nframes),
        dark_groupgap=int(dark_groupgap),
    )
    if dark_output is not None:
        _save_dark(dark_output, avg, nframes, groupgap)
    avg_da = xr.DataArray(avg, dims=(GROUP, *IMAGE_DIMS), coords={Y: ds[Y], X: ds[X]}, name="dark")
    data = map_ramp_blocks(kernel.subtract_dark, ds[DATA], avg_da, dtype=FLOAT_DTYPE, inplace=True)
    updates = {DATA: data, AVERAGE_DARK_CURRENT: avdrk}
    if dark_dq is not None:
        ddq = as_image(dark_dq, ds, "dark_dq")
        updates[PIXELDQ] = ds[PIXELDQ].copy(data=kernel.dark_pixeldq(ds[PIXELDQ].data, ddq.data))
    return with_status(ds, STATUS, COMPLETE, **updates)


def _save_dark(path, avg, nframes, groupgap):
    from astropy.io import fits

    if _is_dask(avg):
        # the frame-averaged dark (reference-sized: ngroups × y × x) of a DARK the workers
        # read (RefSet.lazy), computed for the file before the graph is built, as the numpy
        # path does; the products' graph keeps its own lazy copy
        import dask

        (avg,) = dask.compute(avg)

    hdr = fits.Header()
    hdr["NFRAMES"] = nframes
    hdr["GROUPGAP"] = groupgap
    hdr["NGROUPS"] = int(avg.shape[0])
    sci = fits.ImageHDU(np.asarray(avg, dtype=np.float32), name="SCI")
    fits.HDUList([fits.PrimaryHDU(header=hdr), sci]).writeto(path, overwrite=True)


def _refs_kwargs(refs, params, ds) -> dict:
    dark = refs.get("dark")
    h = dark.header
    return {"dark": ref_array(dark), "dark_dq": ref_array(dark, "DQ"),
            "dark_nframes": int(h.get("NFRAMES", 1)), "dark_groupgap": int(h.get("GROUPGAP", 0)),
            "dark_avdrkcur": ref_array(dark, "AVDRKCUR"), "dark_avdrkcur_keyword": h.get("AVDRKCUR")}


def _not_fusable(params) -> str | None:
    # the frame-averaged dark is one file of the whole subarray, written once; a tile task
    # sees only its window of it
    if params.dark_output is not None:
        return "dark_current.dark_output saves the whole frame-averaged dark"
    return None


# dark_current changes no group DQ
SPEC = StepSpec(name="dark_current", status=STATUS, params=Params, run=dark_current, scratch=1.17,
                reftypes=("dark",), refs_kwargs=_refs_kwargs, value_flags=False,
                not_fusable=_not_fusable)
