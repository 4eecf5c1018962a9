"""What a step declares about itself: :class:`StepSpec`, the ``SPEC`` of every step module.

A step module (``daskramp.steps.<name>``) holds its validated ``Params``, its xarray wrapper
and a ``SPEC``: the facts both engines (:mod:`daskramp.pipeline`, :mod:`daskramp.engine.fused`),
the memory projection (:mod:`daskramp.engine.plan`) and the products (:mod:`daskramp.io.products`)
read about it.  The ordered registry of specs is :data:`daskramp.steps.REGISTRY`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: what ``refs_missing`` may say: the step is skipped, or the run is refused
REFS_MISSING = ("skip", "error")


@dataclass(frozen=True)
class FramePass:
    """How a step's whole-frame statistics are found from a checkpoint of the ramp it receives
    (:mod:`daskramp.engine.checkpoint`); numpy in, numpy out, one call per task.

    Attributes
    ----------
    variables : callable
        ``variables(params) -> {name: (dims, dtype)}``: what the checkpoint holds besides the
        ramp's own variables.
    tile : callable
        ``tile(window, wrefs, params) -> (saved, returned)``: on each tile's window (every
        integration of its block): arrays to save in the checkpoint (``variables``), and
        (y, x)-trailing arrays assembled into whole images for ``combine``.
    combine : callable
        ``combine(images, pixeldq, skeleton, refs, params) -> context``: once per block, from
        the assembled images, the block's pixeldq and its skeleton.
    block : callable
        ``block(ramp, context, segment_of, positions, attrs, params) -> array``: on whole
        frames of a few integrations read from the checkpoint (each one's segment index in
        the block and position in the exposure given); the result's axis 1 is integration.
    block_shape : callable
        ``block_shape(skeleton, params) -> tuple``: the shape of ``block``'s result without
        its integration axis.
    given : callable
        ``given(lazy_array, skeleton, params) -> dict``: the statistics the step's windows are
        given, from the blocks' results joined along integration.
    rewrites : callable, optional
        ``rewrites(params) -> bool``: the step's output is a whole-image correction (no few
        statistics a tile could apply).  ``block`` then returns ``{rewritten: array}``, the
        corrected variable of its integrations, ``(integration, group, y, x)``, which the
        engine writes into the checkpoint beside the input
        (:func:`daskramp.engine.checkpoint.rewritten_name`); the tiles read it as that
        variable, and ``block_shape``/``given`` describe a small marker that only orders the
        tiles after every block.
    rewritten : str
        The variable a rewriting pass rewrites (``data``, or ``groupdq`` for flags).
    when : callable, optional
        ``when(params) -> bool``: the pass runs only for these parameters (default: whenever
        the step runs).
    after : bool
        The step's own window part runs in the tiles before the checkpoint (given
        ``{"frame_pass": "deferred"}`` among its statistics, it leaves the whole-frame part
        out) and the tiles resume at the step after it; otherwise the checkpoint is taken
        before the step and the tiles resume at it.
    lookback : int
        Integrations before its own that a ``block`` reads (the results for them are
        dropped): a pass whose integration depends on the one before.
    reads : tuple of str, optional
        The checkpoint variables a ``block`` reads (default: ``data``, ``groupdq`` and
        ``variables``).

    Step by step, the engine calls the step's wrapper on the lazy ramp with
    ``frame_integrations``: the integrations per task of its own pass over whole frames.
    """

    variables: Callable
    tile: Callable
    combine: Callable
    block: Callable
    block_shape: Callable
    given: Callable
    rewrites: Callable | None = None
    rewritten: str = "data"
    when: Callable | None = None
    after: bool = False
    lookback: int = 0
    reads: tuple | None = None

    def runs(self, params) -> bool:
        """Whether the pass runs for the step's ``params`` (the step itself running)."""
        return not params.skip and (self.when is None or bool(self.when(params)))


@dataclass(frozen=True)
class StepSpec:
    """The facts of one calibration step.

    Attributes
    ----------
    name : str
        The official step name (``steps.<name>`` in configurations).
    status : str
        FITS status keyword the step sets (``S_JUMP``; stdatamodels core schema).
    params : type
        The step's frozen ``Params`` dataclass (fields declared with :mod:`daskramp.params`).
    run : callable
        What the engines call: ``run(ds, **params, **refs_kwargs, [stats_scope=...],
        **extra)`` with every ``Params`` field but ``skip``; the step's wrapper, except where
        its module documents a dispatcher (ramp_fit).
    scratch : float
        Peak scratch and output bytes of one call per byte of float32 ramp it is given, the
        input not included (:mod:`daskramp.engine.plan` adds it); reproduce with
        ``python benchmarks/memory_factors.py`` (see that module's docstring).
    reftypes : tuple of str
        Reference types the step reads (:data:`daskramp.io.refs.REFTYPES`).
    optional_reftypes : tuple of str
        Those of ``reftypes`` it runs without; the others are required.
    refs_kwargs : callable, optional
        ``refs_kwargs(refs, params, ds) -> dict``: the keyword arguments of ``run`` taken from
        the reference files (a :class:`~daskramp.io.refs.RefSet`, or None), called only when
        every required reftype is there.  On a dask-backed exposure the set's arrays are dask
        arrays a worker reads from the files (:meth:`~daskramp.io.refs.RefSet.lazy`): the
        wrapper keeps them lazy (no ``np.asarray``, no reduction computed while the graph is
        built), so no reference array travels inside the task graph.
    refs_missing : {"skip", "error"}
        A required reference missing skips the step (status SKIPPED with the reason), or is
        an error (:class:`~daskramp.config.ConfigError`).
    stats_kwargs : callable, optional
        ``stats_kwargs(ds, params, given, frame_shape) -> dict``: keyword arguments from the
        whole-frame statistics a tile cannot see, which the engine finds first
        (:mod:`daskramp.engine.stats`).  ``given`` holds them (read only; one missing is
        left for the wrapper to derive from ``ds``, as when it is called on its own);
        ``frame_shape`` is the subarray's ``(ny, nx)`` when ``ds`` is a window of it.
    halo : callable, optional
        ``halo(params) -> int``: how many pixels, on each side, the step's result at a pixel
        depends on beyond it (the fused layout widens each window by the sum, see
        :func:`daskramp.engine.policy.halo_width`); None: pixel-local.
    pools_integrations : bool
        The step pools statistics over the integrations of a segment (or the exposure): it
        takes ``stats_scope`` and runs on blocks holding all of them (pixel tiles).
    on_rate : bool
        The step works on the rate products (after ramp_fit), not on the ramp.
    value_flags : bool
        The group DQ the step sets may depend on the data values (False for steps that only
        propagate reference DQ; the fused layout's probe of jump's all-DO_NOT_USE planes then
        need not wait for the refpix offsets, see :func:`daskramp.engine.stats.probe_needs_offsets`).
    not_fusable : callable, optional
        ``not_fusable(params) -> str | None``: why the fused per-tile layout cannot run this
        configuration of the step (None: it can); called whether or not the step is skipped.
    image_params : tuple of (str, callable)
        Parameters that are ``(y, x)`` images of the whole subarray, each with the loader of
        its FITS path form (the fused layout loads them once and cuts them per window).
    draft_rate : callable, optional
        ``draft_rate(params) -> bool``: the step takes the exposure's draft rate, ``(y, x)``
        DN/s from the raw ramp (``draft_rate`` in its ``stats_kwargs``' ``given``), which the
        engine computes first (:func:`daskramp.engine.stats.draft_rate`).
    fast_lines : callable, optional
        ``fast_lines(params) -> bool``: a call needs every pixel of a fast-read line (a whole
        column for ``|FASTAXIS| = 2``, a whole row for 1): the fused layout's tiles then span
        the fast axis.
    frame_pass : FramePass, optional
        The step needs statistics of whole frames of the ramp as it reaches it (after the
        steps that pool integrations): the fused layout saves that ramp (a checkpoint), runs
        the pass :class:`FramePass` describes, and gives the step its statistics through
        ``stats_kwargs``.
    holds_segment : callable, optional
        ``holds_segment(params) -> bool``: step by step, the step's output of a whole
        segment is held in the workers' memory before the steps after it can start (it
        works on blocks of whole frames and a later step pools integrations on pixel tiles);
        :func:`daskramp.engine.plan.check_held` refuses a cluster too small for it.
    option_reftypes : callable, optional
        ``option_reftypes(params) -> tuple``: reftypes the step reads, and cannot do
        without, only with these parameters (clean_flicker_noise's FLAT with
        ``apply_flat_field``): :meth:`required_for`, not among ``reftypes``.
    check_exposure : callable, optional
        ``check_exposure(params, attrs, frame_shape)``: raises
        :class:`~daskramp.errors.ConfigError` when the step, switched on with ``params``,
        cannot run on this exposure (header ``attrs``, subarray ``(ny, nx)``); called
        before anything is computed (:func:`daskramp.run.prepare`).
    whole_exposure : callable, optional
        ``whole_exposure(params, ngroups) -> bool``: the step's product is combined from every
        integration at once, not from sums carried from one segment to the next, so the
        segments of an exposure are not submitted one after another
        (:func:`daskramp.engine.policy.by_segment`).
    """

    name: str
    status: str
    params: type
    run: Callable
    scratch: float
    reftypes: tuple[str, ...] = ()
    optional_reftypes: tuple[str, ...] = ()
    refs_kwargs: Callable[[Any, Any, Any], dict] | None = None
    refs_missing: str = "skip"
    stats_kwargs: Callable[..., dict] | None = None
    halo: Callable[[Any], int] | None = None
    pools_integrations: bool = False
    on_rate: bool = False
    value_flags: bool = True
    not_fusable: Callable[[Any], str | None] | None = None
    image_params: tuple[tuple[str, Callable], ...] = ()
    draft_rate: Callable[[Any], bool] | None = None
    fast_lines: Callable[[Any], bool] | None = None
    frame_pass: FramePass | None = None
    whole_exposure: Callable[[Any, int], bool] | None = None
    holds_segment: Callable[[Any], bool] | None = None
    check_exposure: Callable[[Any, Any, tuple], None] | None = None
    option_reftypes: Callable[[Any], tuple[str, ...]] | None = None

    def __post_init__(self):
        if self.refs_missing not in REFS_MISSING:
            raise ValueError(f"step {self.name}: refs_missing must be one of {REFS_MISSING}")
        extra = set(self.optional_reftypes) - set(self.reftypes)
        if extra:
            raise ValueError(f"step {self.name}: optional reftypes {sorted(extra)} are not among its reftypes")
        if self.reftypes and self.refs_kwargs is None:
            raise ValueError(f"step {self.name} reads {self.reftypes} but declares no refs_kwargs")

    @property
    def required_reftypes(self) -> tuple[str, ...]:
        """The reftypes the step cannot run without, whatever its parameters."""
        return tuple(rt for rt in self.reftypes if rt not in self.optional_reftypes)

    def required_for(self, params) -> tuple[str, ...]:
        """The reftypes the step cannot run without, with ``params`` (:attr:`required_reftypes`
        and those its options need: ``option_reftypes``)."""
        extra = () if self.option_reftypes is None else tuple(self.option_reftypes(params))
        return self.required_reftypes + tuple(rt for rt in extra if rt not in self.required_reftypes)

    def missing(self, refs) -> list[str]:
        """The required reftypes ``refs`` (a RefSet or None) has no file for."""
        return [rt for rt in self.required_reftypes if ref(refs, rt) is None]


def ref(refs, reftype: str):
    """The reference file of ``reftype`` in ``refs`` (None without one, or without ``refs``)."""
    return None if refs is None else refs.get(reftype)


def ref_array(reffile, ext: str = "SCI"):
    """The array of extension ``ext`` of a reference file (None without the file or array)."""
    return None if reffile is None else reffile.arrays.get(ext)


def params_kwargs(params) -> dict:
    """A step's ``Params`` as the keyword arguments of its wrapper (every field but ``skip``)."""
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.name != "skip"}


__all__ = ["REFS_MISSING", "StepSpec", "params_kwargs", "ref", "ref_array"]
