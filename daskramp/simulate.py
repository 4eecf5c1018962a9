"""Synthetic JWST near-IR exposures with known truth: uncal FITS segments, references, truth.

``simulate(outdir, preset=...)`` writes

* ``OUTDIR/<root>-segNNN_<det>_uncal.fits`` — level-1b uncal segments shaped like MAST's
  (PRIMARY keywords of spec 01 §1, SCI uint16 via BZERO, GROUP (TSO presets) and INT_TIMES
  tables with the segment's rows, a minimal ASDF extension so the official pipeline's
  ``Step.call()`` accepts the file);
* ``OUTDIR/refs/jwst_<instrument>_<detector>_<reftype>_sim.fits`` — MASK, SATURATION,
  SUPERBIAS, LINEARITY, GAIN, READNOISE as full-frame 2048×2048 files (so subarray cut-outs are
  exercised) and a DARK with the science subarray shape and geometry (darks are not cut), each
  with the selection keywords of spec 11 §1 and DATAMODL naming its stdatamodels class;
* ``OUTDIR/truth.zarr`` — what was injected (see :func:`load_truth`, every variable documents
  its meaning and units in its attrs).

Detector model (all in raw DN; the output is uint16, rounded and clipped to 0…65535)
------------------------------------------------------------------------------------
For pixel p, integration i, group g (read time t_g after the reset)::

    e_g   = e_{g-1} + Poisson(gain_p · (S_p · F_i + D_p) · (t_g − t_{g−1}))      [e⁻]
    L_g   = e_g / gain_p + Σ jumps up to g                                      [linear DN]
    M_g   = min(P⁻¹(L_g), well_p)        with P(M) = M + c2_p·M² + c3_p·M³     [measured DN]
    raw_g = superbias_p + o[i, g, amp, parity] + f(t_pixel) + M_g + σ_p·z

* ``S_p`` source rate (DN/s, linear; 0 on reference and dead pixels), ``F_i`` the relative
  flux of integration i (a transit for SOSS, 1 otherwise), ``D_p`` dark current (DN/s).
* Poisson noise on the electron increments: exact (inverse CDF) when the expected increment is
  below ``poisson_exact_below`` e⁻, otherwise the normal approximation N(λ, λ) rounded to whole
  electrons (indistinguishable once λ ≳ 10 and far below the read noise).
* Non-linearity: the LINEARITY reference holds COEFFS = [0, 1, c2, c3], which the pipeline
  applies to measured DN (measured → linear); the simulator applies the exact inverse (Newton
  iterations), so the correction recovers ``L`` to ≪ 0.1 DN.
* Saturation: the measured signal stops at a hard full well ``well_p``; the SATURATION
  reference holds ``superbias_p + sat_fraction·well_p`` (raw DN, bias included).  A
  pixel-group is "driven to saturation" when its measured signal ``M_g`` (before read noise)
  reaches ``sat_fraction·well_p``.
* Bias: SUPERBIAS (pedestal + per-amplifier, per-column and per-pixel structure), plus
  ``o[i, g, amp, parity]``: a per-integration, per-amplifier offset (``bias_int_offset_rms``)
  and a per-group offset per amplifier and even/odd detector column (``refpix_offset_rms``).
  Reference pixels carry the same offsets, which is what refpix removes.
* Read noise: ``σ_p = READNOISE_p / √2 / √NFRAMES`` (the READNOISE reference holds CDS noise
  in DN; one read has CDS/√2).
* 1/f noise ``f``: an independent time series per output with one-sided PSD ``a²/f`` (``a`` =
  ``one_over_f_amplitude`` in DN), sampled once per detector line (10 µs per pixel + 120 µs
  per line, lines counted along the detector slow axis) continuously through the frames of
  an integration and linearly interpolated to each pixel's read time.  Over the N line
  samples of an integration its variance is ``a²·Σ_{k≤N} 1/k ≈ a²·(ln N + 0.58)`` (SOSS:
  N ≈ 18450, rms ≈ 3.2·a).
  The fast (within-line) direction follows FASTAXIS/SLOWAXIS (spec 01 §4: NIS fast axis is
  DMS −y, NRCA1 DMS −x, NRCB1 +x; with 4 outputs the direction alternates by amplifier).
* Dark: the DARK reference holds ``D_p·TFRAME·k`` for frames k = 0, 1, … (plane 0 = 0, NFRAMES=1,
  GROUPGAP=0, one plane per frame the science integration spans; READPATT is the exposure's,
  RAPID for NIRCam whose darks are not selected by it); hot pixels have
  ``D_p`` of 0.5–50 DN/s and carry HOT|DO_NOT_USE in the MASK; dead pixels respond to nothing
  (S = D = 0) and carry DEAD|DO_NOT_USE.
* Cosmic rays: Poisson number ``cr_rate × active pixels × t_last`` per integration, uniform in
  time between the reset and the last read, single-pixel, amplitude (linear DN) from a Pareto
  law ``cr_min_dn·U^(−1/cr_alpha)`` capped at 30000 DN (median ≈ 43 DN, ~3 % above 1000 DN).
  A hit lands in the first group read after it and affects every later group.  Reference and
  dead pixels are not hit.
* Snowballs (off by default, ``snowball_rate`` > 0): a Poisson number ``snowball_rate`` per
  integration, each at one time (uniform between the reset and the last read) and a uniform
  centre: every active pixel within ``r_core`` (uniform in ``snowball_core_radius``, px) of
  the centre gets ``snowball_core_dn`` (enough to saturate), every one out to ``r_halo``
  (uniform in ``snowball_halo_radius``) ``snowball_halo_dn`` × U(0.5, 1.5); the hits join the
  cosmic-ray table and truth.zarr gains ``snowball_*`` (integration, group, centre y/x,
  radii).  Drawn after the cosmic rays, so the default output is unchanged.
* GAIN reference: the gain map, with 0 on the reference-pixel border as in flight GAIN files
  (so the official ramp_fit flags those pixels NO_GAIN_VALUE|DO_NOT_USE).
* Frames averaged on board (NFRAMES > 1): the read time of a group is the mean of its frame
  times, read noise is divided by √NFRAMES and the 1/f value is the frame average; a jump
  counts fully from the group whose mean read time follows it.

Presets (:data:`PRESETS`)
-------------------------
``niriss-soss``  NIRISS/NIS, NIS_SOSS, SUBSTRIP256 (256×2048, SUBSTRT1=1, SUBSTRT2=1793,
    FASTAXIS=−2, SLOWAXIS=−1, 1 output), NISRAPID, NFRAMES=1, GROUPGAP=0, 9 groups,
    TFRAME=TGROUP=5.494 s, 158 integrations per segment (like the WASP-39b segments).
    Orders 1–3 as curved traces (double-horned cross-dispersion profile, ~25 px wide) of a
    smooth spectrum with absorption lines; order-1 peak 800 DN/s so that ~500 of the brightest
    pixels saturate in the last group (a few in the one before); background 2 DN/s; a trapezoid transit of depth 1.5 %
    centred on the exposure, lasting 40 % of it (ingress 15 % of the duration).
    Gain 1.6 e⁻/DN, CDS read noise 10.5 DN, dark 0.01 DN/s, bias ≈ 14000 DN, full well
    40000 DN (saturation at 90 %), c2 = 2.5e-6, c3 = 1e-11 (≈ 10 % non-linear at saturation),
    cosmic rays 5e-5 /px/s, 1/f amplitude 1 DN.  Option ``subarray`` (spec 14 §1–§4):
    SUBSTRIP96 (96×2048 at SUBSTRT (1, 1803), TFRAME 2.214 s; reference pixels only the
    detector top/bottom rows = DMS columns 1–4 and 2045–2048; it holds order 1 and the edge
    of order 2) or FULL (2048×2048, 4 outputs, TFRAME 10.73677 s; the orders sit where they do in
    the strips).  ``readpatt`` NISRAPID or NIS.  The default is unchanged (bit-identical).
``nircam-full``  NIRCam/NRCA1, NRC_IMAGE, FULL 2048×2048, 4 outputs, FASTAXIS=−1, SLOWAXIS=2,
    BRIGHT1 (NFRAMES=1, GROUPGAP=1), 10 groups, TFRAME=10.737 s, TGROUP=21.474 s, F200W/CLEAR,
    2 integrations.  A field of Gaussian stars (σ = 1.2 px, log-uniform fluxes, the two
    brightest peaking at 2000–5000 DN/s so they saturate), background 0.5 DN/s.  Gain 2.0,
    CDS read noise 7 DN.
``nircam-dark``  the same detector and readout (RAPID, 10 groups, TGROUP=TFRAME), NRC_DARK,
    no illumination, 4 integrations.
``nirspec-bots``  NIRSpec bright-object TSO (NRS_BRIGHTOBJ), NRS1, G395H/F290LP, S1600A1,
    SUB2048 (2048×32 at SUBSTRT (1, 963), FASTAXIS=2, SLOWAXIS=1, 1 output), NRSRAPID, 70 groups,
    TFRAME=TGROUP=0.902 s, 155 integrations per segment.  Options (spec 14 §1–§4):
    ``detector`` NRS1/NRS2 (NRS2: FASTAXIS=−2, SLOWAXIS=−1, rows and columns mirrored),
    ``subarray`` SUB2048, SUB1024A, SUB1024B, SUB512, SUB512S, ``grating`` (sets SUBSTRT2 and
    FILTER), ``readpatt`` NRSRAPID, NRS, NRSRAPIDD1/D2/D6; IRS2 patterns are refused (never used
    for subarrays).  Reference pixels: SUB2048 DMS columns 1–4 and 2045–2048 (detector bottom and
    top rows), SUB1024A/B the 4 columns at the detector edge, none in SUB512/SUB512S (the
    pipeline uses their first and last 4 columns, so the scene leaves them dark).  A spectral
    trace (Gaussian σ 0.9 px, tilted 3 px over the detector) crosses every column; peak 750 DN/s
    (≈ saturation in the last of 70 groups), background 0.2 DN/s, the SOSS transit.  Gain 1.4,
    CDS read noise 12 DN, dark 0.005 DN/s.
``nircam-grism-tso``  NIRCam LW grism TSO (NRC_TSGRISM), NRCALONG (FASTAXIS=−1, SLOWAXIS=2),
    F322W2 + GRISMR, SUBGRISM64 (2048×64 at (1, 1)), 4 outputs, BRIGHT2 (NFRAMES=2,
    GROUPGAP=0), 6 groups, TFRAME=0.34061 s, 366 integrations.  Options: ``subarray``
    SUBGRISM64/128/256, ``noutputs`` 1 or 4, ``readpatt`` any NIRCam pattern (RAPID, BRIGHT1
    (1, 1), BRIGHT2 (2, 0), SHALLOW2 (2, 3), …), ``detector`` NRCBLONG (module B, SUBSTRT2 =
    2049 − rows).  Reference pixels: DMS rows 1–4 (module B: 2045–2048) and columns 1–4, 2045–2048.  A trace at row 34
    (σ 1.2 px) from column 600 to 2000; peak 12000 DN/s, background 1 DN/s, the SOSS transit.
    Gain 1.8, CDS read noise 9 DN, dark 0.02 DN/s.  The DARK is a RAPID dark (READPATT=RAPID,
    NFRAMES=1, GROUPGAP=0) selected by EXP_TYPE, NOUTPUTS and SUBARRAY; dark_current averages
    its frames per group for the other patterns.

``nircam-imaging-tso``  NIRCam imaging time series (NRC_TSIMAGE): by default the short-wave
    weak-lens images taken simultaneously with ``nircam-grism-tso`` (same exposure root, timing,
    readout and transit): NRCA3 (FASTAXIS=−1, SLOWAXIS=2), F210M + WLP8, SUBGRISM64 stripe at SUBSTRT
    (1, 134) (SIAF NRCA3_GRISMTS64; the SUBARRAY name is assumed to be the LW one, spec 14 §10),
    4 outputs, BRIGHT2, 6 groups, TFRAME 0.34061 s, 366 integrations.  The SW stripes hold only
    the side reference columns (SUBGRISM256 also the bottom rows): with 4 outputs refpix skips
    the per-amplifier step (spec 14 §5).  Options: ``detector`` NRCA1/NRCA3 (SUBGRISM64/128/256,
    1 or 4 outputs, rows per :data:`NIRCAM_TSIMAGE_SUBARRAYS`), NRCA3/NRCB1/NRCBLONG with the
    imaging-TSO subarrays SUB64P/SUB160P/SUB400P (1 output; SIAF corners: NRCA3 SUB64P has 4
    side columns, SUB160P/SUB400P and NRCB1/NRCBLONG SUB400P, NRCBLONG SUB160P the detector
    corner, NRCB1 SUB64P/SUB160P and NRCBLONG SUB64P no reference pixels), FULL (4 outputs) on
    any of them; ``noutputs``; ``readpatt``.  Scene "defocused": an annulus (outer radius
    ``psf_radius`` = 20 px, at most 40 % of the smaller side; inner 0.35 of it) with six-fold
    azimuthal modulation, centred on the subarray (``psf_xy``), peak 12000 DN/s, background
    0.5 DN/s, the SOSS transit.  Gain 2.05, CDS read noise 8.5 DN, dark 0.005 DN/s.

For the TSO presets, changing ``detector``, ``subarray``, ``grating``, ``noutputs`` or
``readpatt`` re-derives SUBSTRT/SUBSIZE, TFRAME (spec 14 §3 formula), NFRAMES/GROUPGAP, FILTER
and MODULE (values given explicitly win); ``readpatt`` does the same NFRAMES/GROUPGAP lookup for
every preset.  Their uncal files also carry the GROUP table.

Geometry overrides ``nx``/``ny`` keep the subarray a valid cut of the detector that keeps
reference pixels where the real one has them: SOSS keeps SUBSTRT2 = 2049 − ny (reference rows
at the top; when only ``nx`` changes, the strip keeps its rows, e.g. SUBSTRIP96's 1803) and
SUBSTRT1 = 1 (reference columns 0–3); NIRCam and NIRSpec subarrays sit at the
(1, 1) corner and use 1 output.  Changed geometries are called ``GENERIC``; TFRAME keeps the preset's
value (override ``tframe=`` to change it), so a narrow SOSS-like strip collects the same
signal per group as the real mode — the detector simply idles for the rest of the frame time
(the 1/f series runs on through that time).

Times: integration i starts one reset frame after the previous one ends
(cycle = (frames per integration + 1)·TFRAME; SOSS 54.94 s); EXPSTART is the start of the first
integration.  The INT_TIMES BJD_TDB columns are the MJD UTC times + 2400000.5 + 69.184 s (TT −
UTC): no barycentric light-time correction is modelled.  The GROUP table (one row per
integration and group; stage 1 never reads it) is written where the preset says so
(``group_table``: the TSO presets) and ZEROFRAM = F.

Truth (``truth.zarr``): static maps (source_rate, dark_rate, gain, readnoise, superbias,
full_well, saturation_level, pixeldq), relative_flux per integration, bias offsets per
(integration, group, channel), the jump table and the saturation table.  The true rate per
integration is ``source_rate × relative_flux`` (exact: the transit is grey); :func:`load_truth`
adds it as a lazy ``rate`` variable rather than storing nints copies of the frame.  Trace
scenes add ``trace_y`` (the trace centre row per column), the defocused scene the PSF centre and
radius (attrs ``psf_x``, ``psf_y``, ``psf_radius``).

Determinism: every random number comes from ``numpy.random.SeedSequence(seed)``: static maps
and the scene from spawn key ``(0,)``, integration i (0-based over the whole exposure) from
``(1, i)``; inside an integration, normals are drawn in fixed row blocks.  The output is
therefore bit-identical however the generation is split into blocks or worker processes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from daskramp import dq
from daskramp.dims import detector_coords
from daskramp.io import fitswrite

FULL = 2048
REF_BORDER = 4
PIXEL_TIME = 10e-6  # s per pixel
LINE_OVERHEAD_PIXELS = 12  # 120 µs extra per line
_ROW_BLOCK_VALUES = 1 << 22  # normals drawn per row block (fixed: part of the random stream)

#: FASTAXIS, SLOWAXIS per detector (spec 01 §4)
AXES = {
    "NRCA1": (-1, 2), "NRCA3": (-1, 2), "NRCALONG": (-1, 2), "NRCB2": (-1, 2), "NRCB4": (-1, 2),
    "NRCA2": (1, -2), "NRCA4": (1, -2), "NRCB1": (1, -2), "NRCB3": (1, -2), "NRCBLONG": (1, -2),
    "NIS": (-2, -1),
    "NRS1": (2, 1), "NRS2": (-2, -1),
}

#: readout patterns: READPATT → (NFRAMES, GROUPGAP) per instrument (spec 14 §1)
READOUT_PATTERNS: dict[str, dict[str, tuple[int, int]]] = {
    "NIRSPEC": {"NRSRAPID": (1, 0), "NRS": (4, 0), "NRSRAPIDD1": (1, 1), "NRSRAPIDD2": (1, 2),
                "NRSRAPIDD6": (1, 6)},
    "NIRCAM": {"RAPID": (1, 0), "BRIGHT1": (1, 1), "BRIGHT2": (2, 0), "SHALLOW2": (2, 3),
               "SHALLOW4": (4, 1), "MEDIUM2": (2, 8), "MEDIUM8": (8, 2), "DEEP2": (2, 18),
               "DEEP8": (8, 12)},
    "NIRISS": {"NISRAPID": (1, 0), "NIS": (4, 0)},
}
#: the dark reference of each instrument is a "rapid" dark (one frame per plane, spec 01 §2)
RAPID_PATTERN = {"NIRSPEC": "NRSRAPID", "NIRCAM": "RAPID", "NIRISS": "NISRAPID"}

#: NIRSpec bright-object TSO subarrays: SUBSTRT1 on NRS1, SUBSIZE1, SUBSIZE2 (spec 14 §4)
NIRSPEC_BOTS_SUBARRAYS: dict[str, tuple[int, int, int]] = {
    "SUB2048": (1, 2048, 32), "SUB1024A": (1, 1024, 32), "SUB1024B": (1025, 1024, 32),
    "SUB512": (1025, 512, 32), "SUB512S": (1025, 512, 16),
}
#: SUBSTRT2 of the 32-row BOTS subarrays on (NRS1, NRS2) per grating (spec 14 §4); SUB512S
#: starts 8 rows higher on both detectors
NIRSPEC_BOTS_SUBSTRT2: dict[str, tuple[int, int]] = {
    "G140H": (963, 1055), "G140M": (963, 1055), "G235M": (963, 1055), "G395H": (963, 1055),
    "G235H": (967, 1051), "G395M": (946, 1072), "PRISM": (957, 1059),
}
#: the NIRSpec filter paired with each grating in BOTS
NIRSPEC_GRATING_FILTER = {"G140H": "F100LP", "G140M": "F100LP", "G235H": "F170LP", "G235M": "F170LP",
                          "G395H": "F290LP", "G395M": "F290LP", "PRISM": "CLEAR"}
#: IRS2 readouts: NIRSpec full frame only, never subarrays or TSO (spec 14 §6, §8)
IRS2_PATTERNS = ("NRSIRS2RAPID", "NRSIRS2")
#: Preset fields that choose a detector configuration (command-line options of the tools):
#: for the TSO presets they also set SUBSTRT/SUBSIZE, TFRAME, FILTER, MODULE (:func:`_resolve_mode`);
#: ``readpatt`` sets NFRAMES/GROUPGAP from :data:`READOUT_PATTERNS`
MODE_OPTIONS: dict[str, type] = {"detector": str, "subarray": str, "grating": str, "noutputs": int,
                                 "readpatt": str}
#: NIRCam LW grism TSO subarrays: name → rows (2048 columns, spec 14 §4)
NIRCAM_GRISM_SUBARRAYS = {"SUBGRISM64": 64, "SUBGRISM128": 128, "SUBGRISM256": 256}
#: the long-wavelength detectors of the grism TSO mode and their module
NIRCAM_GRISM_DETECTORS = {"NRCALONG": "A", "NRCBLONG": "B"}
#: NIRISS SOSS subarrays: name → SUBSTRT1, SUBSTRT2, SUBSIZE1, SUBSIZE2, NOUTPUTS (spec 14 §1, §4)
NIRISS_SOSS_SUBARRAYS: dict[str, tuple[int, int, int, int, int]] = {
    "SUBSTRIP256": (1, 1793, 2048, 256, 1), "SUBSTRIP96": (1, 1803, 2048, 96, 1), "FULL": (1, 1, 2048, 2048, 4),
}
#: NIRCam imaging time series (NRC_TSIMAGE): (DETECTOR, SUBARRAY) → SUBSTRT1, SUBSTRT2, SUBSIZE1,
#: SUBSIZE2 (1-based DMS).  The SW images taken with the grism TSO (NRCA1/NRCA3, SIAF
#: ``GRISMTSn`` apertures, SUBARRAY assumed to carry the LW stripe's name) and the imaging-TSO
#: subarrays SUB64P/SUB160P/SUB400P (SIAF PRDOPSSOC-073 corners; spec 14 §4).  FULL (1, 1)
#: serves every detector of the mode.
NIRCAM_TSIMAGE_SUBARRAYS: dict[tuple[str, str], tuple[int, int, int, int]] = {
    ("NRCA1", "SUBGRISM64"): (1, 125, 2048, 64), ("NRCA1", "SUBGRISM128"): (1, 95, 2048, 128),
    ("NRCA1", "SUBGRISM256"): (1, 1, 2048, 256),
    ("NRCA3", "SUBGRISM64"): (1, 134, 2048, 64), ("NRCA3", "SUBGRISM128"): (1, 104, 2048, 128),
    ("NRCA3", "SUBGRISM256"): (1, 1, 2048, 256),
    ("NRCA3", "SUB64P"): (1, 101, 64, 64), ("NRCA3", "SUB160P"): (1889, 1, 160, 160),
    ("NRCA3", "SUB400P"): (1649, 1, 400, 400),
    ("NRCB1", "SUB64P"): (1851, 1817, 64, 64), ("NRCB1", "SUB160P"): (1803, 1769, 160, 160),
    ("NRCB1", "SUB400P"): (1649, 1649, 400, 400),
    ("NRCBLONG", "SUB64P"): (1944, 1931, 64, 64), ("NRCBLONG", "SUB160P"): (1889, 1889, 160, 160),
    ("NRCBLONG", "SUB400P"): (1649, 1649, 400, 400),
}
#: detectors of the NIRCam imaging-TSO preset: module, channel, default FILTER, PUPIL (SW: the
#: weak lens +8 in the pupil wheel, as with the grism TSO; LW: a plain imaging filter)
NIRCAM_TSIMAGE_DETECTORS: dict[str, tuple[str, str, str, str]] = {
    "NRCA1": ("A", "SHORT", "F210M", "WLP8"), "NRCA3": ("A", "SHORT", "F210M", "WLP8"),
    "NRCB1": ("B", "SHORT", "F210M", "WLP8"), "NRCBLONG": ("B", "LONG", "F444W", "CLEAR"),
}


@dataclass(frozen=True)
class Preset:
    """Everything that defines a simulated exposure; see the module docstring for the values."""

    name: str
    scene: str  # "soss", "stars", "trace", "defocused" or "dark"
    instrument: str
    detector: str
    exp_type: str
    readpatt: str
    subarray: str
    substrt1: int
    substrt2: int
    nx: int
    ny: int
    noutputs: int
    nframes: int
    groupgap: int
    ngroups: int
    nints: int
    tframe: float
    root: str
    filter: str
    pupil: str | None  # None: no PUPIL keyword (NIRSpec)
    channel: str | None = None
    module: str | None = None
    grating: str | None = None  # NIRSpec GRATING
    fxd_slit: str | None = None  # NIRSpec FXD_SLIT
    #: "nirspec-bots" / "nircam-grism" / "niriss-soss" / "nircam-imaging": geometry, timing and
    #: keywords follow detector,
    #: subarray, grating, noutputs and readpatt (see :func:`_resolve_mode`)
    mode: str | None = None
    group_table: bool = False  # write the GROUP table (one row per integration and group)
    targname: str = "SIMULATED"
    tsovisit: bool = False
    date_obs: str = "2022-07-10"
    time_obs: str = "16:52:23.000"
    # detector
    gain: float = 1.6  # e-/DN
    gain_rms: float = 0.03  # fractional
    readnoise: float = 10.5  # CDS, DN
    readnoise_rms: float = 0.08  # fractional
    bias_level: float = 14000.0  # DN
    bias_amp_rms: float = 300.0
    bias_column_rms: float = 20.0
    bias_pixel_rms: float = 40.0
    bias_int_offset_rms: float = 10.0  # DN, per integration and amplifier
    refpix_offset_rms: float = 4.0  # DN, per group, amplifier and column parity
    one_over_f_amplitude: float = 1.0  # a in PSD = a²/f, DN
    dark_current: float = 0.01  # DN/s
    hot_fraction: float = 1e-3
    hot_rate_range: tuple[float, float] = (0.5, 50.0)  # DN/s, log-uniform
    dead_fraction: float = 5e-4
    full_well: float = 40000.0  # measured DN above bias
    full_well_rms: float = 0.03
    sat_fraction: float = 0.9
    nonlin_c2: float = 2.5e-6  # 1/DN
    nonlin_c3: float = 1e-11  # 1/DN²
    nonlin_rms: float = 0.1  # fractional pixel-to-pixel spread of c2, c3
    cr_rate: float = 5e-5  # per pixel per second
    snowball_rate: float = 0.0  # snowballs per integration (0: none)
    snowball_core_radius: tuple[float, float] = (2.5, 4.5)  # px, uniform
    snowball_halo_radius: tuple[float, float] = (7.0, 14.0)  # px, uniform
    snowball_core_dn: float = 60000.0  # linear DN per core pixel (saturates)
    snowball_halo_dn: float = 400.0  # linear DN per halo pixel (× U(0.5, 1.5))
    cr_min_dn: float = 20.0
    cr_alpha: float = 0.9
    poisson_exact_below: float = 10.0  # e- per group
    # scene
    background: float = 2.0  # DN/s
    peak_rate: float = 800.0  # DN/s: SOSS order-1 peak / brightest star peak
    star_density: float = 5e-5  # stars per pixel (stars scene)
    transit_depth: float = 0.015
    transit_duration: float = 0.4  # fraction of the exposure
    transit_ingress: float = 0.15  # fraction of the transit duration
    transit_mid: float = 0.5  # fraction of the exposure
    # spectral trace (scene "trace": a dispersed point source along DMS x)
    trace_row: float | None = None  # trace centre, rows from the subarray start (None: middle)
    trace_sigma: float = 1.0  # Gaussian cross-dispersion sigma, px
    trace_tilt: float = 0.0  # rise of the trace over 2048 columns, px
    trace_columns: tuple[float, float] = (0.0, 2048.0)  # full-frame DMS x range of the spectrum
    # defocused point source (scene "defocused": a weak-lens image)
    psf_radius: float = 20.0  # outer radius of the defocused PSF, px
    psf_xy: tuple[float, float] | None = None  # its centre, subarray (x, y) indices (None: middle)


PRESETS: dict[str, Preset] = {
    "niriss-soss": Preset(
        name="niriss-soss", scene="soss", instrument="NIRISS", detector="NIS",
        exp_type="NIS_SOSS", readpatt="NISRAPID", subarray="SUBSTRIP256",
        substrt1=1, substrt2=1793, nx=2048, ny=256, noutputs=1, nframes=1, groupgap=0,
        ngroups=9, nints=158, tframe=5.494, root="jw01366001001_04101_00001",
        filter="CLEAR", pupil="GR700XD", mode="niriss-soss", targname="WASP-39", tsovisit=True,
    ),
    "nircam-full": Preset(
        name="nircam-full", scene="stars", instrument="NIRCAM", detector="NRCA1",
        exp_type="NRC_IMAGE", readpatt="BRIGHT1", subarray="FULL",
        substrt1=1, substrt2=1, nx=2048, ny=2048, noutputs=4, nframes=1, groupgap=1,
        ngroups=10, nints=2, tframe=10.737, root="jw01345002001_02101_00001",
        filter="F200W", pupil="CLEAR", channel="SHORT", module="A",
        date_obs="2022-12-01", time_obs="08:12:40.000",
        gain=2.0, readnoise=7.0, bias_level=12000.0, full_well=45000.0, background=0.5,
        peak_rate=2000.0,
    ),
    "nircam-dark": Preset(
        name="nircam-dark", scene="dark", instrument="NIRCAM", detector="NRCA1",
        exp_type="NRC_DARK", readpatt="RAPID", subarray="FULL",
        substrt1=1, substrt2=1, nx=2048, ny=2048, noutputs=4, nframes=1, groupgap=0,
        ngroups=10, nints=4, tframe=10.737, root="jw01062001001_01101_00001",
        filter="F200W", pupil="CLEAR", channel="SHORT", module="A", targname="NONE",
        date_obs="2022-11-20", time_obs="03:00:00.000",
        gain=2.0, readnoise=7.0, bias_level=12000.0, full_well=45000.0, background=0.0,
        peak_rate=0.0,
    ),
    "nirspec-bots": Preset(
        name="nirspec-bots", scene="trace", instrument="NIRSPEC", detector="NRS1",
        exp_type="NRS_BRIGHTOBJ", readpatt="NRSRAPID", subarray="SUB2048",
        substrt1=1, substrt2=963, nx=2048, ny=32, noutputs=1, nframes=1, groupgap=0,
        ngroups=70, nints=155, tframe=0.902, root="jw01366004001_04101_00001",
        filter="F290LP", pupil=None, grating="G395H", fxd_slit="S1600A1", mode="nirspec-bots",
        targname="WASP-39", tsovisit=True, group_table=True,
        date_obs="2022-07-30", time_obs="20:46:39.000",
        gain=1.4, readnoise=12.0, bias_level=12000.0, full_well=45000.0, dark_current=0.005,
        background=0.2, peak_rate=750.0, trace_sigma=0.9, trace_tilt=3.0,
    ),
    "nircam-grism-tso": Preset(
        name="nircam-grism-tso", scene="trace", instrument="NIRCAM", detector="NRCALONG",
        exp_type="NRC_TSGRISM", readpatt="BRIGHT2", subarray="SUBGRISM64",
        substrt1=1, substrt2=1, nx=2048, ny=64, noutputs=4, nframes=2, groupgap=0,
        ngroups=6, nints=366, tframe=0.34061, root="jw01366002001_04103_00001",
        filter="F322W2", pupil="GRISMR", channel="LONG", module="A", mode="nircam-grism",
        targname="WASP-39", tsovisit=True, group_table=True,
        date_obs="2022-07-22", time_obs="18:12:52.000",
        gain=1.8, readnoise=9.0, bias_level=12000.0, full_well=45000.0, dark_current=0.02,
        background=1.0, peak_rate=12000.0, trace_row=33.0, trace_sigma=1.2, trace_tilt=0.5,
        trace_columns=(600.0, 2000.0),
    ),
    "nircam-imaging-tso": Preset(
        name="nircam-imaging-tso", scene="defocused", instrument="NIRCAM", detector="NRCA3",
        exp_type="NRC_TSIMAGE", readpatt="BRIGHT2", subarray="SUBGRISM64",
        substrt1=1, substrt2=134, nx=2048, ny=64, noutputs=4, nframes=2, groupgap=0,
        ngroups=6, nints=366, tframe=0.34061, root="jw01366002001_04103_00001",
        filter="F210M", pupil="WLP8", channel="SHORT", module="A", mode="nircam-imaging",
        targname="WASP-39", tsovisit=True, group_table=True,
        date_obs="2022-07-22", time_obs="18:12:52.000",
        gain=2.05, readnoise=8.5, bias_level=12000.0, full_well=45000.0, dark_current=0.005,
        background=0.5, peak_rate=12000.0, psf_radius=20.0,
    ),
}


@dataclass
class SimulationResult:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    uncal_files : list of Path
        Uncal segments in segment order.
    refs_dir : Path
        Directory holding the reference files.
    truth_path : Path
        ``truth.zarr``.
    attrs : dict
        Primary header keywords of the first segment (exposure-wide ones are identical in
        every segment; INTSTART/INTEND, EXSEGNUM, FILENAME differ).
    refs : dict
        reftype (lower case) → reference file path.
    preset : Preset
        The preset after overrides.
    n_jumps, n_saturated : int
        Injected cosmic rays; pixel-integrations driven to saturation.
    wall_seconds : float
        Time spent generating and writing.
    """

    uncal_files: list[Path]
    refs_dir: Path
    truth_path: Path
    attrs: dict
    refs: dict[str, Path] = field(default_factory=dict)
    preset: Preset | None = None
    n_jumps: int = 0
    n_saturated: int = 0
    wall_seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# geometry


def _configure(preset: str | Preset, nints, ngroups, nx, ny, overrides) -> Preset:
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[preset] if isinstance(preset, str) else preset
    fields = {f.name for f in dataclasses.fields(Preset)}
    bad = set(overrides) - fields
    if bad:
        raise TypeError(f"unknown simulation parameter(s) {sorted(bad)}; known: {sorted(fields)}")
    changes = dict(overrides)
    if nints is not None:
        changes["nints"] = int(nints)
    if ngroups is not None:
        changes["ngroups"] = int(ngroups)
    if "readpatt" in changes:
        _resolve_readpatt(p, changes)
    if p.mode is not None:
        _resolve_mode(p, changes)
        p = dataclasses.replace(p, **changes)
        changes = {}
    new_nx = p.nx if nx is None else int(nx)
    new_ny = p.ny if ny is None else int(ny)
    if not (8 < new_nx <= FULL and 8 < new_ny <= FULL):
        raise ValueError(f"nx, ny must be in 9…{FULL}, got {new_nx}, {new_ny}")
    if (new_nx, new_ny) != (p.nx, p.ny):
        if p.scene == "soss":
            # reference rows at the top (SUBSTRIP256) unless only the columns are narrowed
            # (SUBSTRIP96 keeps its rows)
            changes.update(substrt1=1, substrt2=p.substrt2 if new_ny == p.ny else FULL - new_ny + 1)
        else:
            changes.update(substrt1=1, substrt2=1)
        full = new_nx == FULL and new_ny == FULL
        noutputs = 4 if full else 1
        changes.update(nx=new_nx, ny=new_ny, subarray="FULL" if full else "GENERIC", noutputs=noutputs)
    p = dataclasses.replace(p, **changes)
    if p.nints < 1 or p.ngroups < 1 or p.nframes < 1 or p.groupgap < 0:
        raise ValueError("nints, ngroups, nframes must be ≥ 1 and groupgap ≥ 0")
    if p.substrt1 < 1 or p.substrt2 < 1 or p.substrt1 - 1 + p.nx > FULL or p.substrt2 - 1 + p.ny > FULL:
        raise ValueError("the subarray does not fit on the 2048×2048 detector")
    return p


def frame_time(nx: int, ny: int, *, fastaxis: int, noutputs: int) -> float:
    """TFRAME (s) of an ``ny × nx`` DMS image (spec 14 §3, JDox).

    With n_f pixels along the fast axis and n_s along the slow one: one output
    ``(n_f + 12)(n_s + 2) × 10 µs``; four outputs ``((n_f/4 + 12)(n_s + 1) + 1) × 10 µs``.
    """
    n_f, n_s = (nx, ny) if abs(fastaxis) == 1 else (ny, nx)
    if noutputs == 4:
        ticks = (n_f // 4 + LINE_OVERHEAD_PIXELS) * (n_s + 1) + 1
    else:
        ticks = (n_f + LINE_OVERHEAD_PIXELS) * (n_s + 2)
    return round(ticks * PIXEL_TIME, 8)


def _resolve_readpatt(p: Preset, changes: dict) -> None:
    """NFRAMES/GROUPGAP of an overridden READPATT (unless given too); IRS2 is refused."""
    rp = str(changes["readpatt"]).strip().upper()
    changes["readpatt"] = rp
    if rp in IRS2_PATTERNS:
        raise ValueError(
            f"READPATT {rp!r} is an IRS2 readout: IRS2 is used only for NIRSpec full frames, never "
            f"for subarrays or time series (spec 14 §6), and daskramp does not process IRS2 data; "
            f"use one of {', '.join(READOUT_PATTERNS['NIRSPEC'])}")
    table = READOUT_PATTERNS.get(p.instrument, {})
    if rp in table:
        nframes, groupgap = table[rp]
        changes.setdefault("nframes", nframes)
        changes.setdefault("groupgap", groupgap)
    elif "nframes" not in changes or "groupgap" not in changes:
        raise ValueError(
            f"unknown {p.instrument} readout pattern {rp!r}; known: {', '.join(table) or 'none'} "
            f"(or give nframes= and groupgap= with it)")


def _resolve_mode(p: Preset, changes: dict) -> None:
    """Geometry, timing and keywords of the TSO presets from detector/subarray/grating/noutputs.

    ``nirspec-bots``: DETECTOR NRS1 or NRS2, SUBARRAY one of :data:`NIRSPEC_BOTS_SUBARRAYS`,
    GRATING one of :data:`NIRSPEC_BOTS_SUBSTRT2` (it sets SUBSTRT2 and FILTER), one output.
    NRS2 mirrors NRS1 (SUBSTRT1 = 2050 − SUBSTRT1(NRS1) − SUBSIZE1; spec 14 §4, unverified).
    ``nircam-grism``: DETECTOR NRCALONG (module A, SUBSTRT (1, 1)) or NRCBLONG (module B,
    SUBSTRT2 = 2049 − rows), SUBARRAY SUBGRISM64/128/256 (2048 columns), 1 or 4 outputs.
    ``niriss-soss``: DETECTOR NIS, SUBARRAY SUBSTRIP256, SUBSTRIP96 (1 output) or FULL
    (4 outputs) from :data:`NIRISS_SOSS_SUBARRAYS`.
    ``nircam-imaging``: DETECTOR and SUBARRAY one of :data:`NIRCAM_TSIMAGE_SUBARRAYS` or FULL;
    SUBGRISMn 1 or 4 outputs, SUBnP 1, FULL 4 (spec 14 §1 NOUTPUTS rule); MODULE, CHANNEL,
    FILTER and PUPIL follow the detector.
    TFRAME follows :func:`frame_time` unless given.  Explicit SUBSTRT/size/FILTER/TFRAME
    overrides win.  NOUTPUTS defaults to the subarray's (the preset's for SUBGRISMn).
    """
    det = str(changes.get("detector", p.detector)).strip().upper()
    sub = str(changes.get("subarray", p.subarray)).strip().upper()
    given = "noutputs" in changes
    nout = int(changes.get("noutputs", p.noutputs))
    if p.mode == "niriss-soss":
        if det != "NIS":
            raise ValueError(f"niriss-soss: DETECTOR must be NIS, got {det!r}")
        if sub not in NIRISS_SOSS_SUBARRAYS:
            raise ValueError(f"niriss-soss: unknown subarray {sub!r}; known: {', '.join(NIRISS_SOSS_SUBARRAYS)} "
                             "(the SUB*STRIPE_SOSS superstripe readouts are refused, spec 14 §8)")
        x1, y1, nx, ny, n_sub = NIRISS_SOSS_SUBARRAYS[sub]
        if not given:
            nout = n_sub
        elif nout != n_sub:
            raise ValueError(f"niriss-soss: {sub} is read through {n_sub} output{'s' if n_sub > 1 else ''}, "
                             f"not {nout}")
        geo = {"substrt1": x1, "substrt2": y1, "nx": nx, "ny": ny}
    elif p.mode == "nircam-imaging":
        if det not in NIRCAM_TSIMAGE_DETECTORS:
            raise ValueError(f"nircam-imaging-tso: DETECTOR must be one of {', '.join(NIRCAM_TSIMAGE_DETECTORS)}, "
                             f"got {det!r}")
        if sub == "FULL":
            x1, y1, nx, ny = 1, 1, FULL, FULL
            allowed = (4,)
        elif (det, sub) in NIRCAM_TSIMAGE_SUBARRAYS:
            x1, y1, nx, ny = NIRCAM_TSIMAGE_SUBARRAYS[(det, sub)]
            allowed = (1, 4) if sub.startswith("SUBGRISM") else (1,)
        else:
            known = sorted({s for d, s in NIRCAM_TSIMAGE_SUBARRAYS if d == det}) + ["FULL"]
            raise ValueError(f"nircam-imaging-tso: unknown subarray {sub!r} on {det}; known: {', '.join(known)}")
        if not given:
            nout = p.noutputs if p.noutputs in allowed else allowed[0]
        elif nout not in allowed:
            raise ValueError(f"nircam-imaging-tso: NOUTPUTS must be {' or '.join(map(str, allowed))} for {sub}, "
                             f"got {nout}")
        module, channel, filt, pupil = NIRCAM_TSIMAGE_DETECTORS[det]
        geo = {"substrt1": x1, "substrt2": y1, "nx": nx, "ny": ny}
        changes.setdefault("module", module)
        changes.setdefault("channel", channel)
        if "detector" in changes and channel != p.channel:
            changes.setdefault("filter", filt)
            changes.setdefault("pupil", pupil)
    elif p.mode == "nirspec-bots":
        if det not in ("NRS1", "NRS2"):
            raise ValueError(f"nirspec-bots: DETECTOR must be NRS1 or NRS2, got {det!r}")
        if sub not in NIRSPEC_BOTS_SUBARRAYS:
            raise ValueError(f"nirspec-bots: unknown subarray {sub!r}; known: {', '.join(NIRSPEC_BOTS_SUBARRAYS)} "
                             "(SUB32 is the target-acquisition subarray)")
        grating = str(changes.get("grating", p.grating)).strip().upper()
        if grating not in NIRSPEC_BOTS_SUBSTRT2:
            raise ValueError(f"nirspec-bots: unknown grating {grating!r}; known: {', '.join(NIRSPEC_BOTS_SUBSTRT2)}")
        if nout != 1:
            raise ValueError(f"nirspec-bots: NIRSpec subarrays are read through one output, not {nout}")
        x1, nx, ny = NIRSPEC_BOTS_SUBARRAYS[sub]
        y_nrs1, y_nrs2 = NIRSPEC_BOTS_SUBSTRT2[grating]
        shift = 8 if sub == "SUB512S" else 0
        geo = {"substrt1": x1 if det == "NRS1" else FULL + 2 - x1 - nx,
               "substrt2": (y_nrs1 if det == "NRS1" else y_nrs2) + shift, "nx": nx, "ny": ny}
        changes["grating"] = grating
        changes.setdefault("filter", NIRSPEC_GRATING_FILTER[grating])
    elif p.mode == "nircam-grism":
        if det not in NIRCAM_GRISM_DETECTORS:
            raise ValueError(f"nircam-grism-tso: DETECTOR must be one of {', '.join(NIRCAM_GRISM_DETECTORS)}, got {det!r}")
        if sub not in NIRCAM_GRISM_SUBARRAYS:
            raise ValueError(f"nircam-grism-tso: unknown subarray {sub!r}; known: {', '.join(NIRCAM_GRISM_SUBARRAYS)}")
        if nout not in (1, 4):
            raise ValueError(f"nircam-grism-tso: NOUTPUTS must be 1 or 4, got {nout}")
        n = NIRCAM_GRISM_SUBARRAYS[sub]
        module = NIRCAM_GRISM_DETECTORS[det]
        geo = {"substrt1": 1, "substrt2": 1 if module == "A" else FULL + 1 - n, "nx": FULL, "ny": n}
        changes.setdefault("module", module)
        changes.setdefault("channel", "LONG")
    else:
        raise ValueError(f"unknown preset mode {p.mode!r}")
    changes.update(detector=det, subarray=sub, noutputs=nout)
    for k, v in geo.items():
        changes.setdefault(k, v)
    fast = AXES[det][0]
    changes.setdefault("tframe", frame_time(changes["nx"], changes["ny"], fastaxis=fast, noutputs=nout))


def _dms_to_detector(Y: np.ndarray, X: np.ndarray, fast: int, slow: int):
    """Full-frame DMS (row Y, column X) → detector (line r along slow, column c along fast)."""
    sf, ss = np.sign(fast), np.sign(slow)
    if abs(fast) == 1:
        r = Y if ss > 0 else FULL - 1 - Y
        c = X if sf > 0 else FULL - 1 - X
    else:
        c = Y if sf > 0 else FULL - 1 - Y
        r = X if ss > 0 else FULL - 1 - X
    return r, c


class _Geometry:
    """Where every subarray pixel sits in the readout: line, amplifier, parity, read time."""

    def __init__(self, p: Preset):
        self.fast, self.slow = AXES[p.detector]
        Y = (p.substrt2 - 1 + np.arange(p.ny))[:, None] + np.zeros((1, p.nx), int)
        X = (p.substrt1 - 1 + np.arange(p.nx))[None, :] + np.zeros((p.ny, 1), int)
        r, c = _dms_to_detector(Y, X, self.fast, self.slow)
        if p.noutputs == 4:
            width = FULL // 4
            amp = c // width
            u = c % width
            u = np.where(amp % 2 == 0, u, width - 1 - u)  # fast direction alternates by output
            # lines of the subarray only (a 4-output subarray, e.g. SUBGRISM64, reads n_s lines)
            line = r - r.min()
            self.nlines = int(r.max() - r.min() + 1)
        else:
            width = int(c.max() - c.min() + 1)
            amp = np.zeros_like(c)
            u = c - c.min()
            line = r - r.min()
            self.nlines = int(r.max() - r.min() + 1)
        self.width = width
        self.line_period = (width + LINE_OVERHEAD_PIXELS) * PIXEL_TIME
        self.namp = p.noutputs
        self.amp = amp.astype(np.int32)
        self.chan = (2 * amp + (c % 2)).astype(np.int32)
        self.nchan = 2 * p.noutputs
        self.line = line.astype(np.int32)
        self.phi = (u * PIXEL_TIME / self.line_period).astype(np.float32)
        self.det_r, self.det_c = r, c


def _frame_layout(p: Preset):
    """Frame indices of each group, group read times (s after reset) and frames per integration."""
    step = p.nframes + p.groupgap
    frames = np.arange(p.ngroups)[:, None] * step + np.arange(p.nframes)[None, :]
    t_read = (frames + 1).mean(axis=1) * p.tframe
    nframes_int = p.ngroups * step - p.groupgap
    return frames.astype(np.int64), t_read, nframes_int


# --------------------------------------------------------------------------------------------
# static maps (full frame) and scene


def _full_frame_maps(p: Preset, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Detector maps on the whole 2048×2048 DMS frame (float32 / uint32)."""
    shape = (FULL, FULL)
    idx = np.arange(FULL)
    r, c = _dms_to_detector(idx[:, None], idx[None, :], *AXES[p.detector])  # broadcastable 1-D
    ref = np.zeros(shape, bool)
    ref[:REF_BORDER, :] = ref[-REF_BORDER:, :] = True
    ref[:, :REF_BORDER] = ref[:, -REF_BORDER:] = True

    def normal(scale):
        return scale * rng.standard_normal(shape, dtype=np.float32)

    amp_level = rng.normal(0.0, p.bias_amp_rms, 4).astype(np.float32)
    col_level = rng.normal(0.0, p.bias_column_rms, FULL).astype(np.float32)
    # pedestal + amplifier and column structure + a slow drift along the frame + pixel scatter
    bias = (np.float32(p.bias_level) + amp_level[c // 512] + col_level[c]
            + (np.float32(150.0 / FULL) * r - np.float32(75.0)))
    bias = (bias + normal(p.bias_pixel_rms)).astype(np.float32)
    gain = np.float32(p.gain) * (1 + normal(p.gain_rms))
    rn = (np.float32(p.readnoise) * (1 + normal(p.readnoise_rms))).clip(0.3 * p.readnoise)
    well = np.float32(p.full_well) * (1 + normal(p.full_well_rms))
    c2 = np.float32(p.nonlin_c2) * (1 + normal(p.nonlin_rms))
    c3 = np.float32(p.nonlin_c3) * (1 + normal(p.nonlin_rms))
    dark = (np.float32(p.dark_current) * (1 + normal(0.3))).clip(0)

    mask = np.zeros(shape, np.uint32)
    mask[ref] = dq.REFERENCE_PIXEL
    u = rng.random(shape)
    hot = (u < p.hot_fraction) & ~ref
    dead = (u >= p.hot_fraction) & (u < p.hot_fraction + p.dead_fraction) & ~ref
    lo, hi = p.hot_rate_range
    dark[hot] = np.exp(rng.uniform(np.log(lo), np.log(hi), int(hot.sum()))).astype(np.float32)
    dark[dead] = 0.0
    mask[hot] |= dq.HOT | dq.DO_NOT_USE
    mask[dead] |= dq.DEAD | dq.DO_NOT_USE
    dark[ref] = 0.0
    c2[ref] = 0.0
    c3[ref] = 0.0
    return {"bias": bias, "gain": gain, "readnoise": rn, "well": well, "c2": c2, "c3": c3,
            "dark": dark, "mask": mask, "ref": ref, "dead": dead, "hot": hot}


def _soss_scene(p: Preset, rng: np.random.Generator) -> np.ndarray:
    """SOSS source rate (DN/s) on the subarray: three curved orders of one spectrum."""
    Y = (p.substrt2 - 1 + np.arange(p.ny))[:, None].astype(np.float64)
    X = (p.substrt1 - 1 + np.arange(p.nx))[None, :].astype(np.float64)
    xn = X / FULL
    # stellar continuum along the dispersion (peaks mid-detector), with absorption lines
    # (centred on the strip so that a narrowed SOSS-like strip keeps the bright, saturating part)
    x_c = p.substrt1 - 1 + 0.63 * p.nx
    cont = 0.25 + 0.75 * np.exp(-0.5 * ((X - x_c) / (0.32 * p.nx)) ** 2)
    line_x = rng.uniform(0, FULL, 25)
    line_w = rng.uniform(2.0, 6.0, 25)
    line_d = rng.uniform(0.05, 0.35, 25)
    for x0, w, d in zip(line_x, line_w, line_d):
        cont = cont * (1 - d * np.exp(-0.5 * ((X - x0) / w) ** 2))

    def profile(dy):
        # defocused SOSS PSF: two horns ~12 px apart, ~25 px full width
        return np.exp(-0.5 * ((dy - 6.0) / 4.0) ** 2) + np.exp(-0.5 * ((dy + 6.0) / 4.0) ** 2)

    y0 = 1792.0
    orders = [
        (y0 + 40.0 + 38.0 * (1 - xn) ** 1.5, 1.0, np.ones_like(xn, bool)),
        (y0 + 100.0 + 130.0 * np.clip(X / 1800.0, 0, None) ** 1.3, 0.35, X < 1800),
        (y0 + 150.0 + 100.0 * np.clip(X / 1100.0, 0, None) ** 1.3, 0.06, X < 1100),
    ]
    rate = np.zeros((p.ny, p.nx))
    peak1 = profile(np.array([6.0])).max()
    for yc, scale, present in orders:
        rate += scale * cont * profile(Y - yc) * present
    rate *= p.peak_rate / peak1
    rate += p.background * (1.0 + 0.2 * (xn - 0.5))
    return rate.astype(np.float32)


def _stars_scene(p: Preset, rng: np.random.Generator) -> np.ndarray:
    """A field of Gaussian stars (DN/s) on the subarray; the two brightest saturate."""
    rate = np.full((p.ny, p.nx), p.background, np.float64)
    n = max(3, int(round(p.star_density * p.nx * p.ny)))
    ys = rng.uniform(REF_BORDER + 3, p.ny - REF_BORDER - 3, n)
    xs = rng.uniform(REF_BORDER + 3, p.nx - REF_BORDER - 3, n)
    peaks = np.exp(rng.uniform(np.log(0.5), np.log(0.05 * p.peak_rate), n))
    peaks[:2] = rng.uniform(1.0, 2.5, 2) * p.peak_rate
    sigma, half = 1.2, 8
    for y0, x0, a in zip(ys, xs, peaks):
        iy, ix = int(y0), int(x0)
        ya, yb = max(iy - half, 0), min(iy + half + 1, p.ny)
        xa, xb = max(ix - half, 0), min(ix + half + 1, p.nx)
        gy = np.exp(-0.5 * ((np.arange(ya, yb) - y0) / sigma) ** 2)
        gx = np.exp(-0.5 * ((np.arange(xa, xb) - x0) / sigma) ** 2)
        rate[ya:yb, xa:xb] += a * gy[:, None] * gx[None, :]
    return rate.astype(np.float32)


def _trace_scene(p: Preset, rng: np.random.Generator) -> np.ndarray:
    """A dispersed point source (DN/s) on the subarray: one spectral trace along DMS x.

    The spectrum lies between the full-frame columns ``trace_columns`` (smooth 5 % edges), with
    a continuum peaking at 40 % of that range and 40 absorption lines; the cross-dispersion
    profile is a Gaussian of ``trace_sigma`` centred ``trace_row`` rows above the subarray start
    at the detector centre, rising ``trace_tilt`` px over 2048 columns.  ``peak_rate`` is the
    maximum of the trace.  For the NIRSpec subarrays without reference pixels (SUB512,
    SUB512S, SUB32) the first and last four columns get no light at all: the pipeline uses
    them as reference pixels (spec 14 §4).
    """
    Y = (p.substrt2 - 1 + np.arange(p.ny))[:, None].astype(np.float64)
    # the spectrum along every detector column, so that it does not depend on the subarray
    XF = np.arange(FULL, dtype=np.float64)
    x0, x1 = p.trace_columns
    xn = (XF - x0) / (x1 - x0)
    edge = np.clip(np.minimum(xn, 1.0 - xn) / 0.05, 0.0, 1.0)
    cont = np.sin(0.5 * np.pi * edge) ** 2 * (0.45 + 0.55 * np.exp(-0.5 * ((xn - 0.4) / 0.35) ** 2))
    line_x = rng.uniform(x0, x1, 40)
    line_w = rng.uniform(1.0, 4.0, 40)
    line_d = rng.uniform(0.05, 0.4, 40)
    for xc, w, d in zip(line_x, line_w, line_d):
        cont = cont * (1 - d * np.exp(-0.5 * ((XF - xc) / w) ** 2))
    cont /= max(cont.max(), 1e-12)
    cols = slice(p.substrt1 - 1, p.substrt1 - 1 + p.nx)
    X, cont = XF[None, cols], cont[None, cols]
    row = (p.ny - 1) / 2.0 if p.trace_row is None else float(p.trace_row)
    yc = p.substrt2 - 1 + row + p.trace_tilt * (X - FULL / 2) / FULL
    rate = p.peak_rate * cont * np.exp(-0.5 * ((Y - yc) / p.trace_sigma) ** 2) + p.background
    if p.instrument == "NIRSPEC" and p.subarray in ("SUB512", "SUB512S", "SUB32"):
        rate[:, :REF_BORDER] = 0.0
        rate[:, -REF_BORDER:] = 0.0
    return rate.astype(np.float32)


def _psf_center(p: Preset) -> tuple[float, float]:
    """Centre (x, y) of the defocused PSF in subarray indices."""
    return ((p.nx - 1) / 2.0, (p.ny - 1) / 2.0) if p.psf_xy is None else (float(p.psf_xy[0]), float(p.psf_xy[1]))


def _psf_radius(p: Preset) -> float:
    """Outer radius of the defocused PSF: ``psf_radius``, at most 40 % of the smaller side."""
    return float(min(p.psf_radius, 0.4 * min(p.nx, p.ny)))


def _defocused_scene(p: Preset, rng: np.random.Generator) -> np.ndarray:
    """A weak-lens (defocused) image of a point source (DN/s) on the subarray.

    An annulus of outer radius R (:func:`_psf_radius`) and inner radius 0.35 R (the secondary
    mirror's shadow), edges softened over ~1 px, its brightness modulated azimuthally
    (0.7–1.0, six-fold like the segment pattern, plus a random low-order term) and rising
    towards the rim; ``peak_rate`` is its maximum.  Centre :func:`_psf_center`; a uniform
    ``background`` everywhere.
    """
    cx, cy = _psf_center(p)
    R = _psf_radius(p)
    Y = np.arange(p.ny, dtype=np.float64)[:, None]
    X = np.arange(p.nx, dtype=np.float64)[None, :]
    r = np.hypot(X - cx, Y - cy)
    phi = np.arctan2(Y - cy, X - cx)
    ring = 0.25 * (1 + np.tanh((R - r) / 0.8)) * (1 + np.tanh((r - 0.35 * R) / 0.8))
    a1, a2 = rng.uniform(0, 2 * np.pi, 2)
    mod = 0.85 + 0.1 * np.cos(6 * phi) + 0.05 * np.cos(phi - a1) * np.cos(2 * phi - a2)
    mod = mod * (0.8 + 0.2 * np.clip(r / max(R, 1e-9), 0.0, 1.0))
    img = ring * mod
    rate = p.peak_rate * img / max(float(img.max()), 1e-12) + p.background
    return rate.astype(np.float32)


def _trace_center_rows(p: Preset) -> np.ndarray:
    """Full-frame 0-based row of the trace centre at every subarray column (scene "trace")."""
    X = np.arange(p.substrt1 - 1, p.substrt1 - 1 + p.nx, dtype=np.float64)
    row = (p.ny - 1) / 2.0 if p.trace_row is None else float(p.trace_row)
    return p.substrt2 - 1 + row + p.trace_tilt * (X - FULL / 2) / FULL


#: scenes with a transit light curve
_TRANSIT_SCENES = ("soss", "trace", "defocused")


def _transit(t_mid_s: np.ndarray, exposure_s: float, p: Preset) -> np.ndarray:
    """Trapezoid relative flux at the integration mid-times (s since the first integration starts).

    ``exposure_s`` runs from the start of the first integration to the end of the last.
    """
    if p.transit_depth == 0 or p.scene not in _TRANSIT_SCENES:
        return np.ones_like(t_mid_s)
    t14 = p.transit_duration * exposure_s
    tin = p.transit_ingress * t14
    dt = np.abs(t_mid_s - p.transit_mid * exposure_s)
    frac = np.clip((t14 / 2 - dt) / tin, 0.0, 1.0)
    return 1.0 - p.transit_depth * frac


# --------------------------------------------------------------------------------------------
# 1/f noise


def one_over_f_series(rng: np.random.Generator, n: int, dt: float, amplitude: float) -> np.ndarray:
    """Gaussian noise with one-sided PSD ``amplitude² / f`` (DN²/Hz), ``n`` samples ``dt`` apart.

    Generated in the Fourier domain on a series of 2n samples (so the circular wrap does not
    tie the two ends together) and truncated to n.  With frequencies k/(2n·dt), k = 1…n, the
    variance of every sample is ``amplitude² · Σ_{k=1}^{n} 1/k`` (≈ amplitude²·(ln n + 0.58)).
    Returns float64 of length n.
    """
    if amplitude == 0 or n == 0:
        return np.zeros(n)
    big = 2 * n
    freqs = np.fft.rfftfreq(big, dt)
    sigma = np.zeros_like(freqs)
    sigma[1:] = np.sqrt(amplitude**2 / freqs[1:] * big / (2 * dt))
    spec = sigma * (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)) / math.sqrt(2)
    return np.fft.irfft(spec, n=big)[:n]


# --------------------------------------------------------------------------------------------
# the per-integration kernel


@numba.njit(cache=True)
def _invert_nonlinearity(lin, c2, c3):
    """Measured M with M + c2·M² + c3·M³ = lin (lin ≥ 0).

    Starts from the series inverse to third order, M ≈ L − c2·L² + (2c2² − c3)·L³ (error
    ≈ 5(c2·L)⁴·L, ~20 DN at 40000 DN for c2 = 2.5e-6), and takes one Newton step (two when
    c2·L > 0.08), which leaves |P(M) − L| < 0.01 DN up to full well.
    """
    if lin <= 0.0:
        return lin
    m = lin * (1.0 - c2 * lin + (2.0 * c2 * c2 - c3) * lin * lin)
    f = m + c2 * m * m + c3 * m * m * m - lin
    fp = 1.0 + 2.0 * c2 * m + 3.0 * c3 * m * m
    m -= f / fp
    if c2 * lin > 0.08:  # near and beyond saturation the series start is poorer: one more step
        f = m + c2 * m * m + c3 * m * m * m - lin
        fp = 1.0 + 2.0 * c2 * m + 3.0 * c3 * m * m
        m -= f / fp
    return m


@numba.njit(cache=True)
def _ramps_kernel(
    out, first_sat, row0, src, dark, gain, c2, c3, well, satm, bias, rn, line, phi, amp, chan,
    relflux, poisson_cut, dt, offs, series, frames, nl_eff, jptr, jgrp, jamp, z1, z2,
):
    """Fill rows ``row0 … row0 + z1.shape[0]`` of one integration (see the module docstring).

    ``out`` (ngroups, ny, nx) uint16 receives the FITS-encoded big-endian int16 words;
    ``first_sat`` (ny, nx) int16 the first group whose measured signal reached ``satm``.
    ``z1``/``z2`` (rows, nx, ngroups) float32 standard normals (Poisson / read noise).
    """
    nrows, nx, ngroups = z1.shape
    nfr = frames.shape[1]
    jadd = np.zeros(ngroups)
    for yy in range(nrows):
        y = row0 + yy
        for x in range(nx):
            g_ = gain[y, x]
            lam_rate = (src[y, x] * relflux + dark[y, x]) * g_
            p = y * nx + x
            for g in range(ngroups):
                jadd[g] = 0.0
            for k in range(jptr[p], jptr[p + 1]):
                jadd[jgrp[k]] += jamp[k]
            a = amp[y, x]
            ch = chan[y, x]
            ln = line[y, x]
            ph = phi[y, x]
            b = bias[y, x]
            sig = rn[y, x]
            e = 0.0
            jl = 0.0
            fs = ngroups
            for g in range(ngroups):
                lam = lam_rate * dt[g]
                if lam > 0.0:
                    zz = z1[yy, x, g]
                    if lam < poisson_cut:
                        # exact Poisson by inverse CDF of u = Φ(z)
                        u = 0.5 * math.erfc(-zz / math.sqrt(2.0))
                        kk = 0
                        pk = math.exp(-lam)
                        cdf = pk
                        while u > cdf and kk < 200:
                            kk += 1
                            pk *= lam / kk
                            cdf += pk
                        e += kk
                    else:
                        e += math.floor(lam + math.sqrt(lam) * zz + 0.5)
                jl += jadd[g]
                lin = e / g_ + jl
                m = _invert_nonlinearity(lin, c2[y, x], c3[y, x])
                if m > well[y, x]:
                    m = well[y, x]
                if fs == ngroups and m >= satm[y, x]:
                    fs = g
                onef = 0.0
                for j in range(nfr):
                    idx = frames[g, j] * nl_eff + ln
                    onef += series[a, idx] * (1.0 - ph) + series[a, idx + 1] * ph
                onef /= nfr
                v = b + offs[g, ch] + onef + m + sig * z2[yy, x, g]
                iv = int(math.floor(v + 0.5))
                if iv < 0:
                    iv = 0
                elif iv > 65535:
                    iv = 65535
                w = iv ^ 0x8000
                out[g, y, x] = ((w & 0xFF) << 8) | (w >> 8)
            first_sat[y, x] = fs


# --------------------------------------------------------------------------------------------
# exposure state shared by the generator processes


def _integration_rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, int(i))))


def _static_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))


def _build_state(p: Preset, seed: int, nints_total: int):
    rng = _static_rng(seed)
    maps = _full_frame_maps(p, rng)
    sl = (slice(p.substrt2 - 1, p.substrt2 - 1 + p.ny), slice(p.substrt1 - 1, p.substrt1 - 1 + p.nx))
    sub = {k: np.ascontiguousarray(v[sl]) for k, v in maps.items()}
    if p.scene == "soss":
        src = _soss_scene(p, rng)
    elif p.scene == "stars":
        src = _stars_scene(p, rng)
    elif p.scene == "trace":
        src = _trace_scene(p, rng)
    elif p.scene == "defocused":
        src = _defocused_scene(p, rng)
    else:
        src = np.zeros((p.ny, p.nx), np.float32)
    src[sub["ref"] | sub["dead"]] = 0.0
    geo = _Geometry(p)
    frames, t_read, nframes_int = _frame_layout(p)
    nl_eff = max(geo.nlines, int(round(p.tframe / geo.line_period)))
    cycle = (nframes_int + 1) * p.tframe  # one reset frame between integrations
    t_start = np.arange(nints_total) * cycle + p.tframe
    t_end = t_start + nframes_int * p.tframe
    t_mid = 0.5 * (t_start + t_end)
    exposure = t_end[-1] - t_start[0]
    relflux = _transit(t_mid - t_start[0], exposure, p)
    active = ~(sub["ref"] | sub["dead"])
    gain_sim = np.where(sub["ref"], 1.0, sub["gain"]).astype(np.float32)
    state = {
        "p": p,
        "seed": seed,
        "src": src,
        "dark": sub["dark"],
        "gain": gain_sim,
        "c2": sub["c2"],
        "c3": sub["c3"],
        "well": sub["well"],
        "satm": (p.sat_fraction * sub["well"]).astype(np.float32),
        "bias": sub["bias"],
        "rn_read": (sub["readnoise"] / math.sqrt(2.0) / math.sqrt(p.nframes)).astype(np.float32),
        "line": geo.line,
        "phi": geo.phi,
        "amp": geo.amp,
        "chan": geo.chan,
        "nchan": geo.nchan,
        "namp": geo.namp,
        "line_period": geo.line_period,
        "nl_eff": nl_eff,
        "frames": frames,
        "t_read": t_read,
        "dt": np.diff(np.concatenate([[0.0], t_read])),
        "nframes_int": nframes_int,
        "relflux": relflux,
        "active_flat": np.flatnonzero(active.ravel()).astype(np.int64),
    }
    times = {"t_start": t_start, "t_end": t_end, "t_mid": t_mid, "exposure": exposure, "cycle": cycle}
    return state, maps, sub, times


def _one_integration(state, i: int):
    """Generate integration ``i`` (0-based over the exposure).

    Returns the FITS-encoded SCI block (ngroups, ny, nx) as ``>i2``-ordered uint16 words, the
    jump table rows and the saturation events.
    """
    p: Preset = state["p"]
    ny, nx, ng = p.ny, p.nx, p.ngroups
    rng = _integration_rng(state["seed"], i)
    # bias offsets: per integration per amplifier, per group per (amplifier, column parity)
    int_off = rng.normal(0.0, p.bias_int_offset_rms, state["namp"])
    offs = rng.normal(0.0, p.refpix_offset_rms, (ng, state["nchan"]))
    offs += int_off[np.arange(state["nchan"]) // 2][None, :]
    offs = offs.astype(np.float32)
    nseries = (state["frames"][-1, -1] + 1) * state["nl_eff"] + 1
    series = np.stack([
        one_over_f_series(rng, nseries, state["line_period"], p.one_over_f_amplitude)
        for _ in range(state["namp"])
    ]).astype(np.float32)
    # cosmic rays
    t_last = state["t_read"][-1]
    active = state["active_flat"]
    nj = rng.poisson(p.cr_rate * active.size * t_last)
    jflat = active[rng.integers(0, active.size, nj)] if active.size else np.zeros(0, np.int64)
    jt = rng.uniform(0.0, t_last, nj)
    jgrp = np.searchsorted(state["t_read"], jt, side="left").astype(np.int64)
    jamp = np.minimum(p.cr_min_dn * (1.0 - rng.random(nj)) ** (-1.0 / p.cr_alpha), 30000.0)
    snow = np.zeros((6, 0), np.float32)
    if p.snowball_rate > 0:
        jflat, jgrp, jamp, snow = _snowballs(state, rng, jflat, jgrp, jamp, i)
        nj = jflat.size
    order = np.argsort(jflat, kind="stable")
    jflat, jgrp, jamp = jflat[order], jgrp[order], jamp[order]
    jptr = np.concatenate([[0], np.cumsum(np.bincount(jflat, minlength=ny * nx))]).astype(np.int64)

    out = np.empty((ng, ny, nx), np.uint16)
    first_sat = np.empty((ny, nx), np.int16)
    rows = max(1, _ROW_BLOCK_VALUES // (nx * ng))
    for row0 in range(0, ny, rows):
        nr = min(rows, ny - row0)
        z1 = rng.standard_normal((nr, nx, ng), dtype=np.float32)
        z2 = rng.standard_normal((nr, nx, ng), dtype=np.float32)
        _ramps_kernel(
            out, first_sat, row0, state["src"], state["dark"], state["gain"], state["c2"],
            state["c3"], state["well"], state["satm"], state["bias"], state["rn_read"],
            state["line"], state["phi"], state["amp"], state["chan"], float(state["relflux"][i]),
            float(p.poisson_exact_below), state["dt"], offs, series, state["frames"],
            int(state["nl_eff"]), jptr, jgrp, jamp, z1, z2,
        )
    jy, jx = np.divmod(jflat, nx)
    jumps = np.stack([np.full(nj, i), jgrp, jy, jx]).astype(np.int32), jamp.astype(np.float32), snow
    sy, sx = np.nonzero(first_sat < ng)
    sat = np.stack([np.full(sy.size, i), first_sat[sy, sx], sy, sx]).astype(np.int32)
    return out, jumps, sat, offs


def _snowballs(state, rng, jflat, jgrp, jamp, i):
    """Add this integration's snowballs to the cosmic-ray table (see the module docstring).

    Returns the extended ``jflat, jgrp, jamp`` and the truth rows (6, n) float32:
    integration, group, centre y, centre x, core radius, halo radius (px).
    """
    p: Preset = state["p"]
    ny, nx = p.ny, p.nx
    n = rng.poisson(p.snowball_rate)
    t = rng.uniform(0.0, state["t_read"][-1], n)
    grp = np.searchsorted(state["t_read"], t, side="left").astype(np.int64)
    cy, cx = rng.uniform(0, ny, n), rng.uniform(0, nx, n)
    rc = rng.uniform(*p.snowball_core_radius, n)
    rh = np.maximum(rng.uniform(*p.snowball_halo_radius, n), rc)
    active = state["active_flat"]
    flats, grps, amps = [jflat], [jgrp], [jamp]
    for k in range(n):
        r = int(math.ceil(rh[k]))
        y0, y1 = max(int(cy[k]) - r, 0), min(int(cy[k]) + r + 1, ny)
        x0, x1 = max(int(cx[k]) - r, 0), min(int(cx[k]) + r + 1, nx)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(yy + 0.5 - cy[k], xx + 0.5 - cx[k]).ravel()
        flat = (yy * nx + xx).ravel()
        if active.size == 0:
            continue
        pos = np.minimum(np.searchsorted(active, flat), active.size - 1)
        ok = (d <= rh[k]) & (active[pos] == flat)
        flat, d = flat[ok], d[ok]
        amp = np.where(d <= rc[k], p.snowball_core_dn,
                       p.snowball_halo_dn * rng.uniform(0.5, 1.5, flat.size))
        flats.append(flat)
        grps.append(np.full(flat.size, grp[k], np.int64))
        amps.append(amp)
    jflat, jgrp, jamp = np.concatenate(flats), np.concatenate(grps), np.concatenate(amps)
    snow = np.stack([np.full(n, i), grp, cy, cx, rc, rh]).astype(np.float32)
    return jflat, jgrp, jamp, snow


_WORKER_STATE = None


def _worker_init(state):
    global _WORKER_STATE
    _WORKER_STATE = state


def _worker_run(i):
    # native uint16 words travel unchanged through pickle (a '>i2' view would be byte-swapped)
    return _one_integration(_WORKER_STATE, i)


def _generate(state, indices, workers: int) -> Iterator:
    """Yield (SCI block (1, ngroups, ny, nx) ``>i2``, jumps, saturation, offsets) in order.

    The block holds the stored FITS values (physical DN − 32768, big-endian).
    """
    if workers <= 1:
        for i in indices:
            out, jumps, sat, offs = _one_integration(state, i)
            yield out[None].view(">i2"), jumps, sat, offs
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(state,)) as ex:
        pending = []
        it = iter(indices)
        for i in it:
            pending.append(ex.submit(_worker_run, i))
            if len(pending) >= 2 * workers:
                break
        while pending:
            fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(ex.submit(_worker_run, nxt))
            out, jumps, sat, offs = fut.result()
            yield out[None].view(">i2"), jumps, sat, offs


# --------------------------------------------------------------------------------------------
# headers, references, truth


def _mjd(date_obs: str, time_obs: str) -> float:
    from astropy.time import Time

    return float(Time(f"{date_obs}T{time_obs}", scale="utc").mjd)


#: TT − UTC (s) since 2017; TDB − TT (< 2 ms) and the barycentric light time are not modelled
_TT_MINUS_UTC = 69.184


def _int_times(p: Preset, times, mjd0: float, i0: int, i1: int) -> dict[str, np.ndarray]:
    day = 86400.0
    s = mjd0 + times["t_start"][i0:i1] / day
    m = mjd0 + times["t_mid"][i0:i1] / day
    e = mjd0 + times["t_end"][i0:i1] / day
    off = 2400000.5 + _TT_MINUS_UTC / day
    return {
        "integration_number": np.arange(i0 + 1, i1 + 1, dtype=np.int32),
        "int_start_MJD_UTC": s, "int_mid_MJD_UTC": m, "int_end_MJD_UTC": e,
        "int_start_BJD_TDB": s + off, "int_mid_BJD_TDB": m + off, "int_end_BJD_TDB": e + off,
    }


def _group_table(p: Preset, times, mjd0: float, i0: int, i1: int):
    """The ``GROUP`` table of integrations ``i0 … i1 − 1``: one row per integration and group.

    Columns as stdatamodels' group schema (spec 01 §1).  A group ends when its last frame is
    read; ``end_day`` counts days since 2000-01-01, ``end_milliseconds`` the milliseconds of
    that day and ``end_submilliseconds`` the microseconds after them (UTC, as the other times
    here); ``bary_end_time``/``helio_end_time`` are MJD TDB without the light-time correction
    (like the INT_TIMES BJD columns).  Stage 1 never reads this table.
    """
    from astropy.io import fits
    from astropy.time import Time

    frames, _, _ = _frame_layout(p)
    last = (frames[:, -1] + 1) * p.tframe  # s after the integration starts
    ints = np.arange(i0, i1)
    t_end = (times["t_start"][ints][:, None] + last[None, :]).ravel()
    mjd = mjd0 + t_end / 86400.0
    days = np.floor(mjd - 51544.0)
    usec = np.rint((mjd - 51544.0 - days) * 86400e6).astype(np.int64)
    n = t_end.size
    iso = Time(mjd, format="mjd", scale="utc", precision=6).isot
    cols = [
        fits.Column(name="integration_number", format="J", array=np.repeat(ints + 1, p.ngroups).astype(np.int32)),
        fits.Column(name="group_number", format="I", array=np.tile(np.arange(1, p.ngroups + 1), ints.size).astype(np.int16)),
        fits.Column(name="end_day", format="I", array=days.astype(np.int16)),
        fits.Column(name="end_milliseconds", format="J", array=(usec // 1000).astype(np.int32)),
        fits.Column(name="end_submilliseconds", format="I", array=(usec % 1000).astype(np.int16)),
        fits.Column(name="group_end_time", format="26A", array=np.asarray(iso, dtype="S26")),
        fits.Column(name="number_of_columns", format="I", array=np.full(n, p.nx, np.int16)),
        fits.Column(name="number_of_rows", format="I", array=np.full(n, p.ny, np.int16)),
        fits.Column(name="number_of_gaps", format="I", array=np.zeros(n, np.int16)),
        fits.Column(name="completion_code_number", format="I", array=np.zeros(n, np.int16)),
        fits.Column(name="completion_code_text", format="36A", array=np.full(n, b"COMPLETE", dtype="S36")),
        fits.Column(name="bary_end_time", format="D", array=mjd + _TT_MINUS_UTC / 86400.0),
        fits.Column(name="helio_end_time", format="D", array=mjd + _TT_MINUS_UTC / 86400.0),
    ]
    return fits.BinTableHDU.from_columns(cols, name="GROUP")


def _primary_keywords(p: Preset, times, mjd0, nints_total, segments) -> dict:
    from astropy.time import Time

    tgroup = (p.nframes + p.groupgap) * p.tframe
    t0 = mjd0 + times["t_start"][0] / 86400.0
    t1 = mjd0 + times["t_end"][-1] / 86400.0
    start = Time(t0, format="mjd", scale="utc").isot
    prog = p.root[2:7]
    kw = {
        "DATE": ("2024-01-01T00:00:00.000", "file creation date (simulated)"),
        "ORIGIN": "daskramp",
        "TIMESYS": "UTC",
        "TELESCOP": "JWST",
        "DATAMODL": "Level1bModel",
        "INSTRUME": p.instrument,
        "DETECTOR": p.detector,
        "FILTER": p.filter,
    }
    if p.pupil:
        kw["PUPIL"] = p.pupil
    if p.grating:
        kw["GRATING"] = p.grating
    if p.fxd_slit:
        kw["FXD_SLIT"] = p.fxd_slit
    if p.channel:
        kw["CHANNEL"] = p.channel
    if p.module:
        kw["MODULE"] = p.module
    kw.update({
        "PROGRAM": prog,
        "OBSERVTN": p.root[7:10],
        "VISIT": p.root[10:13],
        "VISITGRP": p.root[14:16],
        "SEQ_ID": p.root[16:17],
        "ACT_ID": p.root[17:19],
        "EXPOSURE": p.root[20:25],
        "TARGNAME": p.targname,
        "TSOVISIT": p.tsovisit,
        "DATE-OBS": (start[:10], "UTC date at start of exposure"),
        "TIME-OBS": (start[11:23], "UTC time at start of exposure"),
        "EXPSTART": (t0, "[MJD] UTC exposure start"),
        "EXPMID": (0.5 * (t0 + t1), "[MJD] UTC exposure mid"),
        "EXPEND": (t1, "[MJD] UTC exposure end"),
        "EXP_TYPE": p.exp_type,
        "READPATT": p.readpatt,
        "NINTS": (nints_total, "number of integrations in the exposure"),
        "NGROUPS": p.ngroups,
        "NFRAMES": p.nframes,
        "GROUPGAP": p.groupgap,
        "NSAMPLES": 1,
        "TSAMPLE": 10.0,
        "TFRAME": (p.tframe, "[s] time between frames"),
        "TGROUP": (tgroup, "[s] time between groups"),
        "EFFINTTM": ((p.ngroups - 1) * tgroup, "[s] effective integration time"),
        "EFFEXPTM": ((p.ngroups - 1) * tgroup * nints_total, "[s] effective exposure time"),
        "DURATION": (times["exposure"], "[s] total exposure duration"),
        "NRSTSTRT": 1,
        "NRESETS": 1,
        "ZEROFRAM": False,
        "DRPFRMS1": 0,
        "DRPFRMS3": p.groupgap,
        "FRMDIVSR": p.nframes,
        "EXSEGTOT": segments,
        "SUBARRAY": p.subarray,
        "SUBSTRT1": p.substrt1,
        "SUBSIZE1": p.nx,
        "SUBSTRT2": p.substrt2,
        "SUBSIZE2": p.ny,
        "FASTAXIS": AXES[p.detector][0],
        "SLOWAXIS": AXES[p.detector][1],
        "NOUTPUTS": p.noutputs,
    })
    return kw


#: stdatamodels class of each reference type (DATAMODL), so that ``datamodels.open`` knows it
_REF_MODELS = {"MASK": "MaskModel", "SATURATION": "SaturationModel", "SUPERBIAS": "SuperBiasModel",
               "LINEARITY": "LinearityModel", "DARK": "DarkModel", "GAIN": "GainModel",
               "READNOISE": "ReadnoiseModel", "FLAT": "FlatModel"}


def _ref_common(p: Preset, reftype: str, descrip: str, *, full: bool) -> dict:
    fast, slow = AXES[p.detector]
    model = _REF_MODELS[reftype]
    if reftype == "DARK" and p.instrument == "NIRSPEC":
        model = "DarkNirspecModel"
    kw = {
        "REFTYPE": reftype,
        "DATAMODL": model,
        "DESCRIP": descrip,
        "AUTHOR": "daskramp simulate",
        "USEAFTER": "2022-01-01T00:00:00",
        "PEDIGREE": "DUMMY",
        "TELESCOP": "JWST",
        "INSTRUME": p.instrument,
        "DETECTOR": p.detector,
    }
    if p.channel:
        kw["CHANNEL"] = p.channel
    if p.module:
        kw["MODULE"] = p.module
    if full:
        kw.update({"SUBARRAY": "FULL", "SUBSTRT1": 1, "SUBSIZE1": FULL, "SUBSTRT2": 1, "SUBSIZE2": FULL})
    else:
        kw.update({"SUBARRAY": p.subarray, "SUBSTRT1": p.substrt1, "SUBSIZE1": p.nx,
                   "SUBSTRT2": p.substrt2, "SUBSIZE2": p.ny})
    kw.update({"FASTAXIS": fast, "SLOWAXIS": slow})
    return kw


def _write_refs(p: Preset, maps, sub, state, refs_dir: Path) -> dict[str, Path]:
    refs_dir.mkdir(parents=True, exist_ok=True)
    inst = p.instrument.lower()
    det = p.detector.lower()
    name = {rt: refs_dir / f"jwst_{inst}_{det}_{rt}_sim.fits" for rt in
            ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")}
    zero_dq = np.zeros((FULL, FULL), np.uint32)
    out = {}
    kw = _ref_common(p, "MASK", "simulated bad-pixel mask", full=True) | {"READPATT": "ANY"}
    out["mask"] = fitswrite.write_reference(name["mask"], meta=kw, arrays={"DQ": maps["mask"]})

    sat = (maps["bias"] + p.sat_fraction * maps["well"]).astype(np.float32)
    kw = _ref_common(p, "SATURATION", "simulated saturation thresholds (raw DN)", full=True) | {"READPATT": "ANY"}
    out["saturation"] = fitswrite.write_reference(name["saturation"], meta=kw,
                                                  arrays={"SCI": sat, "DQ": zero_dq})

    kw = _ref_common(p, "SUPERBIAS", "simulated superbias (DN)", full=True) | {"READPATT": "ANY"}
    out["superbias"] = fitswrite.write_reference(
        name["superbias"], meta=kw,
        arrays={"SCI": maps["bias"], "ERR": np.full((FULL, FULL), 1.0, np.float32), "DQ": zero_dq})

    coeffs = np.zeros((4, FULL, FULL), np.float32)
    coeffs[1] = 1.0
    coeffs[2] = maps["c2"]
    coeffs[3] = maps["c3"]
    kw = _ref_common(p, "LINEARITY", "simulated linearity: measured to linear DN", full=True) | {"READPATT": "ANY"}
    out["linearity"] = fitswrite.write_reference(name["linearity"], meta=kw,
                                                 arrays={"COEFFS": coeffs, "DQ": zero_dq})

    gain = np.where(maps["ref"], 0.0, maps["gain"]).astype(np.float32)
    kw = _ref_common(p, "GAIN", "simulated gain (e-/DN), 0 on reference pixels", full=True) | {"BUNIT": "electrons/DN"}
    out["gain"] = fitswrite.write_reference(name["gain"], meta=kw, arrays={"SCI": gain})

    kw = _ref_common(p, "READNOISE", "simulated CDS read noise (DN)", full=True) | {"READPATT": "ANY", "BUNIT": "DN"}
    out["readnoise"] = fitswrite.write_reference(name["readnoise"], meta=kw, arrays={"SCI": maps["readnoise"]})

    if p.instrument != "NIRSPEC":  # NIRSpec spectroscopy has no FLAT (FFLAT/SFLAT/DFLAT instead)
        out["flat"] = _write_flat(p, maps, refs_dir / f"jwst_{inst}_{det}_flat_sim.fits")

    nplanes = state["nframes_int"]
    planes = (np.arange(nplanes, dtype=np.float32)[:, None, None] * np.float32(p.tframe)
              * sub["dark"][None]).astype(np.float32)
    kw = _ref_common(p, "DARK", "simulated dark: dark signal per frame (DN), plane 0 = 0", full=False)
    # NIRCam darks are not selected by READPATT (spec 11 §1): one RAPID dark serves every
    # pattern, averaged per group by dark_current; NIRSpec/NIRISS darks select on it
    readpatt = RAPID_PATTERN["NIRCAM"] if p.instrument == "NIRCAM" else p.readpatt
    kw |= {"EXP_TYPE": p.exp_type, "READPATT": readpatt, "NFRAMES": 1, "GROUPGAP": 0,
           "NGROUPS": nplanes, "NINTS": 1, "NOUTPUTS": p.noutputs, "BUNIT": "DN"}
    out["dark"] = fitswrite.write_reference(
        name["dark"], meta=kw,
        arrays={"SCI": planes, "ERR": np.full_like(planes, 0.01), "DQ": np.zeros((p.ny, p.nx), np.uint32)})
    return out


def _write_flat(p: Preset, maps, path: Path) -> Path:
    """A FLAT reference (used only by clean_flicker_noise's ``apply_flat_field``): a smooth
    pattern and 1 % pixel-to-pixel response (a fixed random stream, so that the other maps
    of a seed do not change), 0 at dead pixels and NaN at a few others, as real flats hold
    them.  The simulated scene is not multiplied by it."""
    rng = np.random.default_rng(np.random.SeedSequence([20221, FULL]))
    yy, xx = np.mgrid[0:FULL, 0:FULL].astype(np.float32) / FULL
    flat = (1.0 + 0.03 * np.sin(2.5 * xx + 1.0) * np.cos(1.7 * yy)
            + 0.01 * rng.standard_normal((FULL, FULL), dtype=np.float32)).astype(np.float32)
    flat[maps["dead"]] = 0.0
    flat[rng.random((FULL, FULL)) < 2e-4] = np.nan
    kw = _ref_common(p, "FLAT", "simulated flat field (relative response)", full=True)
    kw |= {"FILTER": p.filter or "N/A", "PUPIL": p.pupil or "N/A", "READPATT": "ANY"}
    if p.instrument == "MIRI":
        kw |= {"BAND": "N/A"}
    return fitswrite.write_reference(path, meta=kw, arrays={"SCI": flat, "DQ": np.zeros((FULL, FULL), np.uint32)})


def _write_truth(path: Path, p: Preset, state, sub, times, mjd0, jumps, jamps, sats, offsets, seed, segments,
                 snowballs=None):
    import xarray as xr

    nint = state["relflux"].size
    coords = detector_coords({"SUBSTRT1": p.substrt1, "SUBSTRT2": p.substrt2}, p.ny, p.nx)
    seg = np.arange(nint) // p.nints + 1
    t_mid = mjd0 + times["t_mid"] / 86400.0

    def var(dims, data, desc, units):
        return (dims, data, {"description": desc, "units": units})

    ds = xr.Dataset(
        {
            "source_rate": var(("y", "x"), state["src"],
                               "astrophysical count rate out of transit (linear DN/s, what rate should recover; "
                               "0 on reference and dead pixels); rate[i] = source_rate * relative_flux[i]", "DN/s"),
            "relative_flux": var(("integration",), state["relflux"],
                                 "transit light curve at the integration mid-times (1 = out of transit)", "1"),
            "dark_rate": var(("y", "x"), sub["dark"], "dark current (linear DN/s; equals DARK slope / TFRAME)", "DN/s"),
            "gain": var(("y", "x"), sub["gain"], "gain used to convert electrons (GAIN reference, which is 0 on reference pixels)", "e-/DN"),
            "readnoise": var(("y", "x"), sub["readnoise"], "CDS read noise (READNOISE reference); one read has readnoise/sqrt(2)", "DN"),
            "superbias": var(("y", "x"), sub["bias"], "bias pedestal (SUPERBIAS reference)", "DN"),
            "full_well": var(("y", "x"), sub["well"], "hard limit of the measured (non-linear) signal above bias", "DN"),
            "saturation_level": var(("y", "x"), state["satm"],
                                    "measured signal above bias at which a group counts as saturated "
                                    "(SATURATION reference = superbias + saturation_level)", "DN"),
            "pixeldq": var(("y", "x"), sub["mask"], "MASK reference cut to the subarray (REFERENCE_PIXEL, HOT, DEAD, DO_NOT_USE)", "1"),
            "bias_offset": var(("integration", "group", "channel"), np.stack(offsets),
                               "bias offset added to every pixel of an amplifier and detector-column parity "
                               "(channel = 2*amplifier + parity): per-integration amplifier offset + per-group offset", "DN"),
            "jump_integration": var(("jump",), jumps[0], "integration (0-based over the exposure) of each cosmic ray", "1"),
            "jump_group": var(("jump",), jumps[1], "first group (0-based) containing the cosmic ray; all later groups include it", "1"),
            "jump_y": var(("jump",), jumps[2], "row index (0-based) in the subarray", "1"),
            "jump_x": var(("jump",), jumps[3], "column index (0-based) in the subarray", "1"),
            "jump_amplitude": var(("jump",), jamps, "charge deposited, linear DN (before non-linearity)", "DN"),
            "saturated_integration": var(("saturated",), sats[0], "integration of a pixel driven to saturation", "1"),
            "saturated_group": var(("saturated",), sats[1], "first group (0-based) whose measured signal reached saturation_level; all later groups are saturated too", "1"),
            "saturated_y": var(("saturated",), sats[2], "row index (0-based) in the subarray", "1"),
            "saturated_x": var(("saturated",), sats[3], "column index (0-based) in the subarray", "1"),
        },
        coords={
            **coords,
            "integration": np.arange(nint),
            "group": np.arange(p.ngroups),
            "segment": ("integration", seg.astype(np.int32)),
            "int_mid_MJD_UTC": ("integration", t_mid),
            "group_time": ("group", state["t_read"], {"units": "s", "description": "read time after reset"}),
        },
    )
    if p.scene == "trace":
        x0, x1 = p.trace_columns
        ds["trace_y"] = var(("x",), _trace_center_rows(p),
                            "0-based detector row of the trace centre per column (the spectrum has light "
                            f"between detector columns {x0:g} and {x1:g})", "pixel")
    elif p.scene == "defocused":
        cx, cy = _psf_center(p)
        ds.attrs.update({"psf_x": float(p.substrt1 - 1 + cx), "psf_y": float(p.substrt2 - 1 + cy),
                         "psf_radius": _psf_radius(p),
                         "psf_description": "defocused PSF: annulus centred on (psf_x, psf_y), 0-based "
                                            "detector coordinates, outer radius psf_radius, inner 0.35 × it"})
    if snowballs is not None:
        names = (("integration", "integration (0-based over the exposure)", "1"),
                 ("group", "group (0-based) of the hit; its pixels are also in the jump table", "1"),
                 ("y", "centre row (subarray pixels, continuous: pixel k spans [k, k+1))", "pixel"),
                 ("x", "centre column (subarray pixels, continuous)", "pixel"),
                 ("core_radius", "radius of the saturating core", "pixel"),
                 ("halo_radius", "outer radius of the jump halo", "pixel"))
        for row, (name, desc, units) in zip(snowballs, names):
            data = row.astype(np.int32) if units == "1" else row
            ds[f"snowball_{name}"] = var(("snowball",), data, desc, units)
    ds["y"].attrs["description"] = "0-based detector row (SUBSTRT2 - 1 + index)"
    ds["x"].attrs["description"] = "0-based detector column (SUBSTRT1 - 1 + index)"
    t14 = p.transit_duration * times["exposure"] if p.scene in _TRANSIT_SCENES else 0.0
    ds.attrs.update({
        "description": "truth of a daskramp simulation; rate per integration = source_rate * relative_flux (DN/s)",
        "preset": p.name,
        "seed": int(seed),
        "segments": int(segments),
        "nints_per_segment": int(p.nints),
        "transit_depth": float(p.transit_depth if p.scene in _TRANSIT_SCENES else 0.0),
        "transit_mid_MJD_UTC": float(mjd0 + (times["t_start"][0] + p.transit_mid * times["exposure"]) / 86400.0),
        "transit_duration_s": float(t14),
        "transit_ingress_s": float(p.transit_ingress * t14),
        "transit_shape": "trapezoid (linear ingress/egress)",
        "cr_rate_per_pixel_per_s": float(p.cr_rate),
        "cr_amplitude_law": f"Pareto: {p.cr_min_dn} DN * U^(-1/{p.cr_alpha}), capped at 30000 DN",
        "one_over_f_amplitude_DN": float(p.one_over_f_amplitude),
        "one_over_f_psd": "one-sided a^2/f (DN^2/Hz), sampled per detector line, interpolated per pixel",
        "line_period_s": float(state["line_period"]),
        "readnoise_cds_mean_DN": float(p.readnoise),
        "gain_mean_e_per_DN": float(p.gain),
        "bias_int_offset_rms_DN": float(p.bias_int_offset_rms),
        "refpix_offset_rms_DN": float(p.refpix_offset_rms),
        "dark_current_DN_per_s": float(p.dark_current),
        "nonlin_c2": float(p.nonlin_c2),
        "nonlin_c3": float(p.nonlin_c3),
        "nonlinearity": "measured M from linear L by M + c2 M^2 + c3 M^3 = L (LINEARITY COEFFS = [0, 1, c2, c3])",
        "poisson_exact_below_e": float(p.poisson_exact_below),
        "exposure_duration_s": float(times["exposure"]),
    })
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    return path


# --------------------------------------------------------------------------------------------
# public API


def source_digest() -> str:
    """A short digest of this module's source: caches of simulated exposures key on it, so
    that one made by another version of the simulator is not used."""
    import hashlib

    return hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:8]


def simulate(
    outdir,
    *,
    preset: str | Preset = "niriss-soss",
    nints: int | None = None,
    ngroups: int | None = None,
    segments: int = 1,
    seed: int = 0,
    nx: int | None = None,
    ny: int | None = None,
    workers: int | None = None,
    **overrides,
) -> SimulationResult:
    """Write a synthetic exposure: uncal segments, reference files and truth.

    Parameters
    ----------
    outdir : path-like
        Output directory (created).
    preset : str or Preset
        ``"niriss-soss"``, ``"nircam-full"``, ``"nircam-dark"``, ``"nirspec-bots"``,
        ``"nircam-grism-tso"`` or ``"nircam-imaging-tso"`` (:data:`PRESETS`).
    nints : int, optional
        Integrations **per segment** (default: the preset's, 158 for SOSS).
    ngroups : int, optional
        Groups per integration.
    segments : int
        Number of uncal segments; NINTS = ``nints × segments``.
    seed : int
        Seed of every random number (the output is bit-identical for a given seed).
    nx, ny : int, optional
        Smaller subarray (see the module docstring for where it is placed).
    workers : int, optional
        Generator processes (1 = in this process).  The output does not depend on it.
        Default: 2 (or the number of CPUs if fewer) when the exposure holds more than
        ~50 M pixel-groups, where the start-up of the processes pays off; else 1.
    **overrides
        Any :class:`Preset` field (e.g. ``one_over_f_amplitude=0``, ``cr_rate=0``).  For the
        TSO presets the configuration fields of :data:`MODE_OPTIONS` (``detector="NRS2"``,
        ``subarray="SUB512"`` or ``"SUBSTRIP96"``, ``grating="PRISM"``, ``noutputs=1``,
        ``readpatt="BRIGHT1"``)
        re-derive the geometry and timing (module docstring).

    Raises
    ------
    ValueError
        An unknown preset or configuration, a subarray off the detector, an IRS2 readout.

    Returns
    -------
    SimulationResult
    """
    t_wall = time.perf_counter()
    p = _configure(preset, nints, ngroups, nx, ny, overrides)
    segments = int(segments)
    if segments < 1:
        raise ValueError("segments must be ≥ 1")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    nints_total = p.nints * segments
    state, maps, sub, times = _build_state(p, seed, nints_total)
    mjd0 = _mjd(p.date_obs, p.time_obs)
    refs = _write_refs(p, maps, sub, state, outdir / "refs")
    del maps
    base = _primary_keywords(p, times, mjd0, nints_total, segments)
    det = p.detector.lower()
    files, jump_rows, jump_amps, sat_rows, offsets, snow_rows = [], [], [], [], [], []
    if workers is None:
        big = nints_total * p.ngroups * p.ny * p.nx > 50_000_000
        workers = min(2, os.cpu_count() or 1) if big else 1
    gen = _generate(state, range(nints_total), int(workers))
    first_attrs = None
    for s in range(segments):
        i0, i1 = s * p.nints, (s + 1) * p.nints
        fname = f"{p.root}-seg{s + 1:03d}_{det}_uncal.fits"
        kw = dict(base)
        kw.update({"FILENAME": fname, "EXSEGNUM": s + 1, "INTSTART": i0 + 1, "INTEND": i1})
        asdf_tree = {"meta": {"filename": fname, "model_type": "Level1bModel"}}
        exts = [fitswrite.int_times_hdu(_int_times(p, times, mjd0, i0, i1)), fitswrite.asdf_hdu(asdf_tree)]
        if p.group_table:
            exts.insert(0, _group_table(p, times, mjd0, i0, i1))
        with fitswrite.UncalWriter(outdir / fname, kw, (p.nints, p.ngroups, p.ny, p.nx),
                                   extensions=exts, sci_cards={"BUNIT": "DN"}) as w:
            for _ in range(i0, i1):
                data, (jrows, jamp, snow), sat, offs = next(gen)
                w.write(data)
                snow_rows.append(snow)
                jump_rows.append(jrows)
                jump_amps.append(jamp)
                sat_rows.append(sat)
                offsets.append(offs)
        files.append(outdir / fname)
        if first_attrs is None:
            first_attrs = {k: (v[0] if isinstance(v, tuple) else v) for k, v in kw.items()}
    gen.close()
    jumps = np.concatenate(jump_rows, axis=1)
    jamps = np.concatenate(jump_amps)
    sats = np.concatenate(sat_rows, axis=1)
    truth = _write_truth(outdir / "truth.zarr", p, state, sub, times, mjd0, jumps, jamps, sats,
                         offsets, seed, segments,
                         snowballs=np.concatenate(snow_rows, axis=1) if p.snowball_rate > 0 else None)
    return SimulationResult(
        uncal_files=files, refs_dir=outdir / "refs", truth_path=truth, attrs=first_attrs,
        refs=refs, preset=p, n_jumps=int(jamps.size), n_saturated=int(sats.shape[1]),
        wall_seconds=time.perf_counter() - t_wall,
    )


def load_truth(path):
    """Open ``truth.zarr`` as an xarray Dataset with a lazy ``rate`` (integration, y, x) in DN/s."""
    import xarray as xr

    ds = xr.open_zarr(path, zarr_format=3, consolidated=False)
    rate = (ds["source_rate"] * ds["relative_flux"]).transpose("integration", "y", "x")
    ds["rate"] = rate.astype(np.float32)
    ds["rate"].attrs = {"description": "true count rate per integration (linear DN/s, dark excluded)", "units": "DN/s"}
    return ds


def truth_rateints(path):
    """The true rate of every integration, (integration, y, x) DN/s, as a lazy DataArray."""
    return load_truth(path)["rate"]
