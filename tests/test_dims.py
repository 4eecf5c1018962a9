import dask.array as da
import numpy as np
import pytest

from daskramp import dims
from daskramp.dims import ExposureError

ATTRS = dict(
    INSTRUME="NIRISS", DETECTOR="NIS", EXP_TYPE="NIS_SOSS", READPATT="NISRAPID",
    SUBARRAY="SUBSTRIP256", SUBSTRT1=1, SUBSTRT2=1793, SUBSIZE1=16, SUBSIZE2=8,
    FASTAXIS=-2, SLOWAXIS=-1, NOUTPUTS=1, NINTS=4, NGROUPS=3, NFRAMES=1, GROUPGAP=0,
    TFRAME=5.494, TGROUP=5.494,
)


def _ds(**kw):
    data = np.zeros((4, 3, 8, 16), np.uint16)
    return dims.make_exposure(data, {**ATTRS, **kw})


def test_make_exposure_layout():
    ds = _ds()
    assert ds["data"].dims == dims.RAMP_DIMS
    assert ds["groupdq"].dtype == np.uint8 and ds["pixeldq"].dtype == np.uint32
    # detector coordinates: SUBSTRT2 = 1793 (1-based) -> first row 1792 (0-based)
    assert int(ds.y[0]) == 1792 and int(ds.x[0]) == 0
    assert list(ds.integration_number.values) == [1, 2, 3, 4]
    assert dims.validate(ds) is ds


def test_make_exposure_lazy_groupdq_follows_chunks():
    data = da.zeros((4, 3, 8, 16), dtype=np.uint16, chunks=(2, 3, 8, 16))
    ds = dims.make_exposure(data, ATTRS)
    assert ds["groupdq"].data.chunks == data.chunks


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda ds: ds.drop_vars("groupdq"), "variable 'groupdq' is missing"),
        (lambda ds: ds.assign(data=ds.data.astype("int32")), "data has dtype int32"),
        (lambda ds: ds.assign(pixeldq=ds.pixeldq.astype("uint16")), "pixeldq has dtype uint16"),
        (lambda ds: ds.assign_attrs(SUBSIZE1=32), "SUBSIZE2×SUBSIZE1 = 8×32 but the data are 8×16"),
        (lambda ds: ds.assign_attrs(NGROUPS=5), "NGROUPS=5 but the data have 3 groups"),
        (lambda ds: ds.assign_attrs(FASTAXIS=3), "FASTAXIS=3 should be one of"),
        (lambda ds: ds.assign_attrs(TGROUP="x"), "TGROUP='x' should be int or float"),
        (lambda ds: ds.assign_attrs(NOUTPUTS=2), "NOUTPUTS=2 should be 1, 4 or 5"),
    ],
)
def test_validate_errors(mutate, message):
    with pytest.raises(ExposureError, match=message):
        dims.validate(mutate(_ds()))


def test_validate_missing_keyword_names_source():
    ds = _ds()
    del ds.attrs["TGROUP"]
    with pytest.raises(ExposureError, match="myfile.fits: required keyword TGROUP is missing"):
        dims.validate(ds, source="myfile.fits")


def test_validate_calibrated_flag():
    with pytest.raises(ExposureError, match="expected float32"):
        dims.validate(_ds(), calibrated=True)


def test_segment_bounds():
    data = np.zeros((5, 3, 8, 16), np.uint16)
    ds = dims.make_exposure(data, {**ATTRS, "NINTS": 5}, segment=[1, 1, 2, 2, 3])
    assert dims.segment_bounds(ds) == [(0, 2), (2, 4), (4, 5)]
