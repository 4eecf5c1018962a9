"""NSClean for subarrays: 1/f noise fitted in frequency space (clean_flicker_noise, ``fit_method='fft'``).

The SIDECAR reads a subarray pixel after pixel, ``PIXEL_TIME`` apart, with
``NEW_LINE_OVERHEAD`` idle ticks at the start of every fast-read line.  Laid out on that
clock, the background pixels of an image are an irregular sampling of one time series; its
1/f part lives at low frequencies (and alternating-column noise at Nyquist).  NSClean
(Rauscher 2024, PASP 136, 015001) fits the Fourier coefficients of those frequencies to the
background samples by weighted least squares and subtracts the inverse transform, now known
at every pixel, from the whole image.  A subarray is fitted in overlapping sections of about
``npix_iter`` background pixels along the slow axis, whose models are blended with
triangular weights.

Used by :func:`daskramp.kernels.clean_flicker_noise.clean_ramp` on whole frames; NIRSpec
only (the official step allows ``fit_method='fft'`` for NRS_MSASPEC, NRS_IFU,
NRS_FIXEDSLIT and NRS_BRIGHTOBJ).  Full frames (2048 × 2048) use a different model and are
not implemented.

Conventions: images arrive in the science (DMS) frame, ``(y, x)``; :func:`clean_subarray`
turns them into the detector's read order (slow axis first, fast axis second) and back.
The numerics follow the official step's dtypes (float32 data and apodizer, complex64 basis,
float64 weights and blend), so results agree to rounding.
"""

from __future__ import annotations

import functools

import numpy as np

#: idle clock ticks at the start of each fast-read line (pixels)
NEW_LINE_OVERHEAD = 12
#: pixel dwell time, s
PIXEL_TIME = np.float32(10.0e-6)
#: apodizing filter corners, Hz: pass below fc[0], cosine roll-off to fc[1], stop until
#: fc[2], cosine roll-on to fc[3], pass above (1/f and alternating-column noise)
DEFAULT_FC = (1061, 1211, 49943, 49957)
#: ALLSLITS subarrays keep fewer low frequencies
ALLSLITS_FC = (150, 200, 49943, 49957)
#: MAD → standard deviation of a normal distribution, as the section-level outlier search uses
_MAD_TO_SIGMA = 1.4825


def frequency_cutoffs(subarray: str) -> tuple[int, int, int, int]:
    """The apodizer corners (Hz) of a subarray name."""
    return ALLSLITS_FC if str(subarray).strip().upper() == "ALLSLITS" else DEFAULT_FC


def to_detector(image: np.ndarray, detector: str) -> np.ndarray:
    """A DMS-frame image in read order: NRS1 is transposed, NRS2 transposed and flipped."""
    return image.T if str(detector).upper() == "NRS1" else image.T[::-1]


def from_detector(image: np.ndarray, detector: str) -> np.ndarray:
    """Inverse of :func:`to_detector`."""
    return image.T if str(detector).upper() == "NRS1" else image[::-1].T


def apodizer(freq: np.ndarray, fc) -> np.ndarray:
    """Gain of each Fourier frequency ``freq`` (Hz, float32), float32 in [0, 1]."""
    f0, f1, f2, f3 = (np.float32(c) for c in fc)
    gain = np.zeros(freq.shape, np.float32)
    gain[freq < f0] = 1.0
    fall = (freq >= f0) & (freq < f1)
    gain[fall] = 0.5 * (np.cos((np.pi / (f1 - f0)) * (freq[fall] - f0)) + 1)
    rise = (freq >= f2) & (freq < f3)
    gain[rise] = 0.5 * (np.cos((np.pi / (f3 - f2)) * (freq[rise] - f2) + np.pi) + 1)
    gain[freq >= f3] = 1.0
    return gain


def section_model(data: np.ndarray, mask: np.ndarray, fc=DEFAULT_FC) -> np.ndarray:
    """The fitted 1/f model of one section, read order ``(slow, fast)``, float32.

    Weighted least squares of the apodized Fourier coefficients to the background samples
    (``mask`` True, finite ``data``), each sample weighted by the inverse of the local sample
    density in time (a Gaussian of width ≈ a quarter of the roll-off period).

    Parameters
    ----------
    data : array (slow, fast), float, DN
    mask : array (slow, fast), bool
        Background pixels.
    fc : 4 numbers
        Apodizer corners, Hz.

    Raises
    ------
    numpy.linalg.LinAlgError
        The normal matrix is singular (too few samples for the frequencies fitted).
    """
    data = np.array(data, dtype=np.float32)
    mask = np.array(mask, dtype=bool) & ~np.isnan(data)
    fitted, gain, solve = _solver(data.shape, np.packbits(mask).tobytes(), tuple(fc))
    n = np.int32(data.shape[0] * (data.shape[1] + NEW_LINE_OVERHEAD))  # clock ticks of the section
    coeffs = np.zeros(gain.shape, dtype=np.complex64)
    coeffs[fitted] = np.matmul(solve, data[mask])
    coeffs *= n / int(mask.sum())  # numpy's forward transform carries the factor n
    return np.fft.irfft(coeffs * gain, n).reshape(data.shape[0], -1)[:, :data.shape[1]]


@functools.lru_cache(maxsize=64)
def _grid(shape: tuple[int, int], fc: tuple):
    """What a section's fit needs that depends only on its shape: the clock ticks, the
    fitted frequencies and their Fourier vectors at every pixel (complex128), the apodizer,
    and the transform of the sample-density kernel.  Each is computed element by element as
    a fit of one mask would, so gathering the mask's pixels gives the same values."""
    nslow, nfast = np.int32(shape[0]), np.int32(shape[1])
    line = nfast + NEW_LINE_OVERHEAD
    n = np.int32(nslow * line)
    freq = np.array(np.fft.rfftfreq(n, PIXEL_TIME), dtype=np.float32)
    gain = apodizer(freq, fc)
    fitted = gain > 0.0
    ticks = (np.arange(nslow).reshape(-1, 1) * line + np.arange(nfast).reshape(1, -1)).reshape(-1, 1)
    k = np.flatnonzero(fitted).reshape(1, -1)
    vectors = np.exp(2 * np.pi * 1j * ticks * k / n)
    # local sample density: the sampling pattern (line overheads included) convolved with
    # a Gaussian of width ≈ a quarter of the roll-off period
    width = np.float32(1 / ((fc[0] + fc[1]) / 2) / PIXEL_TIME / 2 / 4)
    t = np.arange(n, dtype=np.float32)
    centre = np.float32(n // 2 + 1)
    kernel = np.exp(-((t - centre) ** 2) / width**2 / 2) / width / np.sqrt(2 * np.pi)
    kernel_ft = np.fft.rfft(np.fft.ifftshift(kernel))
    for arr in (fitted, gain, vectors, kernel_ft):
        arr.flags.writeable = False
    return n, fitted, gain, vectors, kernel_ft


@functools.lru_cache(maxsize=256)
def _solver(shape: tuple[int, int], packed_mask: bytes, fc: tuple):
    """What a section's fit needs that depends only on its shape and mask: the fitted
    frequencies, the apodizer, and the weighted least-squares operator ``(A^H A)^-1 A^H·w``.

    Sections that share a mask pattern (every read line crossing a trace the same way, with
    no pixel flagged) share one operator; the cached values are those an uncached fit
    computes.
    """
    nslow, nfast = int(shape[0]), int(shape[1])
    mask = np.unpackbits(np.frombuffer(packed_mask, np.uint8), count=nslow * nfast).astype(bool)
    n, fitted, gain, vectors, kernel_ft = _grid(shape, fc)
    flat = mask.ravel()
    nsamp = int(flat.sum())
    basis = np.array(vectors[flat] / nsamp, dtype=np.complex64)

    # each sample weighted by the inverse of the local sample density
    sampled = np.hstack((mask.reshape(nslow, nfast), np.zeros((nslow, NEW_LINE_OVERHEAD), dtype=bool))).ravel()
    with np.errstate(divide="ignore"):
        weight = 1 / np.fft.irfft(np.fft.rfft(sampled.astype(np.float32)) * kernel_ft, n)
    weight = weight[sampled]
    weight[~np.isfinite(weight)] = 0.0

    # (A^H A)^-1 A^H with A = diag(w) B, applied to w·d
    a = weight.reshape(-1, 1) * basis
    a_h = np.conjugate(a.T)
    solve = np.matmul(np.linalg.inv(np.matmul(a_h, a)), a_h) * weight.reshape(1, -1)
    solve.flags.writeable = False
    return fitted, gain, solve


def _outlier_mask(image: np.ndarray, mask: np.ndarray, sigrej: float) -> np.ndarray:
    # robust sigma over the whole image (sections are too small for it); an outlier and
    # its four nearest neighbours leave the fit
    med = np.median(image[mask])
    std = _MAD_TO_SIGMA * np.median(np.abs((image - med)[mask]))
    bad = mask & (np.abs(image - med) > sigrej * std)
    keep = mask & ~bad
    keep[1:] &= ~bad[:-1]
    keep[:-1] &= ~bad[1:]
    keep[:, 1:] &= ~bad[:, :-1]
    keep[:, :-1] &= ~bad[:, 1:]
    return keep


def sections(mask: np.ndarray, npix_iter: int) -> list[tuple[int, int]]:
    """``(start, rows)`` of the overlapping fitting sections along the slow axis (read order).

    Each section spans the fewest rows holding more than ``npix_iter`` background pixels,
    unless fewer than ``1.5·npix_iter`` remain, when it runs to the last row with one; the
    next starts half a section later.  Empty list when no row has a background pixel.
    """
    per_row = mask.sum(axis=1)
    rows = np.flatnonzero(per_row > 0)
    if rows.size == 0:
        return []
    cum = np.concatenate(([0], np.cumsum(per_row)))
    total = cum[-1]
    first, last = int(rows[0]), int(rows[-1])
    out = []
    start = first
    while start <= last:
        stop = last + 1
        if total - cum[start] > 1.5 * npix_iter:
            enough = np.flatnonzero(cum[start + 1:last + 2] - cum[start] > npix_iter)
            if enough.size:
                stop = start + 1 + int(enough[0])
        out.append((start, stop - start))
        if stop == last + 1:
            break
        start += max(int(np.round((stop - start) / 2)), 1)
    return out


def clean_subarray(image, mask, detector: str, *, fc=DEFAULT_FC, npix_iter: int = 512,
                   exclude_outliers: bool = True, sigrej: float = 4.0, minfrac: float = 0.05):
    """``image`` minus its NSClean 1/f model, float64 ``(y, x)`` in the science frame.

    Parameters
    ----------
    image : array (y, x), float32, DN
        A background-subtracted group difference (NaN-free).
    mask : array (y, x), bool
        Background pixels (True = used in the fit).
    detector : str
        ``NRS1`` or ``NRS2`` (their read orders differ).
    fc : 4 numbers
        Apodizer corners, Hz (:func:`frequency_cutoffs`).
    npix_iter : int
        Background pixels per fitting section.
    exclude_outliers : bool
        Leave pixels beyond ``sigrej`` robust sigma, and their 4 neighbours, out of the fit.
    minfrac : float
        A section with at most this fraction of background pixels is not corrected.

    Returns
    -------
    numpy.ndarray (y, x) float64, or None when no pixel is left to fit.

    Raises
    ------
    numpy.linalg.LinAlgError
        A section's fit is singular.
    """
    img = to_detector(np.asarray(image), detector)
    m = np.array(to_detector(np.asarray(mask, bool), detector))
    if not m.any():
        return None
    if exclude_outliers:
        m = _outlier_mask(img, m, sigrej)
    parts = sections(m, npix_iter)
    if not parts:
        return None
    model = np.zeros(img.shape)
    total = np.zeros(img.shape)
    for start, rows in parts:
        block = slice(start, start + rows)
        if np.mean(m[block]) > minfrac:
            fit = section_model(img[block], m[block], fc)
        else:
            fit = np.zeros((rows, img.shape[1]))
        # highest weight at a section's centre, never zero, so a lone section has weight 1
        w = 1.001 - np.abs(np.linspace(-1, 1, rows))[:, np.newaxis]
        model[block] += w * fit
        total[block] += w
    total[model == 0] = 1
    model /= total
    return from_detector(img - model, detector)


__all__ = ["ALLSLITS_FC", "DEFAULT_FC", "NEW_LINE_OVERHEAD", "PIXEL_TIME", "apodizer", "clean_subarray",
           "frequency_cutoffs", "from_detector", "section_model", "sections", "to_detector"]
