"""Input and output: uncal FITS segments, Zarr exposure stores.

``open_exposure(path_or_files)`` opens either a store written by ``ingest`` or the uncal files
themselves as a lazy exposure Dataset (:mod:`daskramp.dims`).
"""

from .ingest import CODECS, DEFAULT_CODEC, ingest
from .store import IncompleteStoreError, StoreError, is_complete, open_exposure
from .uncal import (
    SegmentMismatchError,
    UncalFileError,
    UncalFormatError,
    open_uncal,
    read_uncal_header,
)

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "IncompleteStoreError",
    "SegmentMismatchError",
    "StoreError",
    "UncalFileError",
    "UncalFormatError",
    "ingest",
    "is_complete",
    "open_exposure",
    "open_uncal",
    "read_uncal_header",
]
