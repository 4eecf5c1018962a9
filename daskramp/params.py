"""Step parameters: declared once, next to each step's ``Params``, validated once, centrally.

Every field of a step's frozen ``Params`` dataclass (``daskramp.steps.<step>.Params``) is made
with one of the declarations below (:func:`boolean`, :func:`floating`, :func:`integer`,
:func:`string`, :func:`option`, :func:`cores`, :func:`int_list`, :func:`image`,
:func:`output_file`, :func:`scale_list`), which puts its :class:`Rule` in the field's
``metadata``: the type, allowed values and range of the official step spec (jwst 3.0), the
official values daskramp does not implement, and daskramp's own additions.  One validator,
:func:`validate`, reads them for both execution paths (the step-by-step graph and the fused
per-tile engine go through :func:`daskramp.engine.stages.step_params`, the wrappers called
directly through :func:`check`).

Coercion (values arrive as YAML scalars from workflow files, the environment or the command
line):

* booleans: ``True``/``False``, ``0``/``1``, or the strings true/false, yes/no, on/off, t/f,
  1/0 in any case; anything else (``"maybe"``, ``2``) is refused;
* floats: numbers or numeric strings (``"10"`` → 10.0); NaN and ±inf are refused;
* integers: integers, whole floats (``3.0``) or integer strings (``"3"``);
* options: exactly one of the official values — the official step's spec validation is
  case-sensitive (``'ols_c'`` is refused there too);
* ``None`` (YAML ``null``, or the string ``"None"``) only where the official default is
  None.

Every refusal is a :class:`daskramp.config.ConfigError` of one line naming
``steps.<step>.<param>``, the value given and what is allowed; an official value that
daskramp does not implement raises :class:`NotImplementedParameter` (a ConfigError that is
also a NotImplementedError).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

#: key of a field's :class:`Rule` in its ``dataclasses.field`` metadata
RULE = "daskramp.rule"

#: parameters every official step has (stpipe ``Step.spec``) that are not step parameters
#: in daskramp: outputs are chosen by the run (``save_steps``, the output directory)
STEP_BASE_PARAMS = ("pre_hooks", "post_hooks", "output_file", "output_dir", "output_ext",
                    "output_use_model", "output_use_index", "save_results", "suffix",
                    "search_output_file", "input_dir")

_TRUE = frozenset({"true", "yes", "on", "t", "1"})
_FALSE = frozenset({"false", "no", "off", "f", "0"})
_NONE = frozenset({"none", "null"})
_CORE_WORDS_ANY_CASE = ("none", "one")
_CORE_WORDS = ("quarter", "half", "all")


class NotImplementedParameter(ConfigError, NotImplementedError):
    """An official parameter value that daskramp does not implement."""


_NO_FILE = "; the {name} file does not exist"


class Refused(Exception):
    """The value does not fit the rule (:meth:`Rule.coerce`; the caller builds the message)."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


def _num(x) -> str:
    return repr(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Rule:
    """What a step parameter accepts.

    ``kind``: boolean, float, integer, string, option, cores, int_list, image, output_file
    or scale_list.  ``none``: None is allowed (the official default is None).  ``min``/``max``
    inclusive bounds, ``above`` an exclusive lower bound.  ``options``: the official values
    of an option.  ``implemented``: the values daskramp implements (None: all).  ``official``:
    False for daskramp additions.  ``note``: how daskramp uses it (documentation).
    """

    kind: str
    none: bool = False
    min: float | None = None
    max: float | None = None
    above: float | None = None
    options: tuple = ()
    implemented: tuple | None = None
    length: int | None = None
    ndim: tuple[int, ...] = ()
    official: bool = True
    note: str = ""

    # ------------------------------------------------------------------ description
    def _range(self) -> str:
        parts = []
        if self.above is not None:
            parts.append(f"> {_num(self.above)}")
        if self.min is not None:
            parts.append(f">= {_num(self.min)}")
        if self.max is not None:
            parts.append(f"<= {_num(self.max)}")
        return (" " + " and ".join(parts)) if parts else ""

    def allowed(self) -> str:
        """What is allowed, in words (``'a float >= 0'``)."""
        k = self.kind
        if k == "boolean":
            text = "true or false"
        elif k == "float":
            # a range implies finiteness; without one, say it (NaN and inf are refused)
            text = f"a float{self._range()}" if self._range() else "a finite float"
        elif k == "integer":
            text = f"an integer{self._range()}"
        elif k == "string":
            text = "a string"
        elif k == "option":
            opts = [repr(o) for o in self.options if o is not None]
            text = "one of " + ", ".join(opts) if len(opts) > 1 else opts[0]
        elif k == "cores":
            text = "a positive integer, 'none', 'one', 'quarter', 'half' or 'all'"
        elif k == "int_list":
            text = f"a list of {self.length} integers{self._range()}"
        elif k == "image":
            shapes = " or ".join({2: "(y, x)", 3: "(integration, y, x)"}[n] for n in self.ndim)
            text = f"the path of an existing FITS file or a {shapes} array"
        elif k == "output_file":
            text = "a file path"
        elif k == "scale_list":
            text = "a sequence of finite and positive floats or the path of an existing .npy/text file"
        else:  # pragma: no cover - a declaration error
            raise TypeError(f"unknown parameter kind {k!r}")
        return text + (" or None" if self.none else "")

    # ------------------------------------------------------------------ coercion
    def coerce(self, value):
        """The value as the step uses it; raises :class:`Refused`."""
        if value is None or (self.none and isinstance(value, str) and value.strip().lower() in _NONE):
            if self.none:
                return None
            raise Refused()
        return getattr(self, f"_{self.kind}")(value)

    def _bounds(self, v):
        if self.above is not None and not v > self.above:
            raise Refused()
        if self.min is not None and v < self.min:
            raise Refused()
        if self.max is not None and v > self.max:
            raise Refused()
        return v

    def _boolean(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            s = value.strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
        raise Refused()

    def _float(self, value) -> float:
        if isinstance(value, (bool, np.bool_)):
            raise Refused()
        if isinstance(value, numbers.Real):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = float(value.strip())
            except ValueError:
                raise Refused() from None
        else:
            raise Refused()
        if not math.isfinite(v):
            raise Refused()
        return self._bounds(v)

    def _integer(self, value) -> int:
        if isinstance(value, (bool, np.bool_)):
            raise Refused()
        if isinstance(value, numbers.Integral):
            v = int(value)
        elif isinstance(value, numbers.Real):
            if not (math.isfinite(value) and float(value).is_integer()):
                raise Refused()
            v = int(value)
        elif isinstance(value, str):
            s = value.strip()
            try:
                v = int(s)
            except ValueError:
                try:
                    f = float(s)
                except ValueError:
                    raise Refused() from None
                if not (math.isfinite(f) and f.is_integer()):
                    raise Refused() from None
                v = int(f)
        else:
            raise Refused()
        return self._bounds(v)

    def _string(self, value) -> str:
        if isinstance(value, str):
            return value
        raise Refused()

    def _option(self, value) -> str:
        if isinstance(value, str):
            if value in self.options:
                return value
            same = [o for o in self.options if isinstance(o, str) and o.lower() == value.strip().lower()]
            if same:
                raise Refused(f"; the official values are case-sensitive: {same[0]!r}")
        raise Refused()

    def _cores(self, value) -> str:
        if isinstance(value, (bool, np.bool_)):
            raise Refused()
        if isinstance(value, numbers.Integral):
            if value >= 1:
                return str(int(value))
            raise Refused()
        if isinstance(value, str):
            s = value.strip()
            if s.isdigit() and int(s) >= 1:
                return s
            if s.lower() in _CORE_WORDS_ANY_CASE or s in _CORE_WORDS:
                return s
        raise Refused()

    def _int_list(self, value) -> tuple[int, ...]:
        if isinstance(value, str):
            value = [v for v in value.strip().strip("[]()").split(",") if v.strip()]
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != self.length:
            raise Refused()
        item = dataclasses.replace(self, kind="integer", none=False, length=None)
        return tuple(item._integer(v) for v in value)

    def _image(self, value):
        if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
            if not os.path.isfile(os.fsdecode(value)):
                raise Refused(_NO_FILE)
            return value
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if getattr(value, "ndim", None) in self.ndim and getattr(value, "shape", None) is not None:
            return value
        raise Refused()

    def _output_file(self, value):
        if isinstance(value, str) and value.strip():
            return value
        if hasattr(value, "__fspath__"):
            return os.fspath(value)
        raise Refused()

    def _scale_list(self, value):
        if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
            if not os.path.isfile(os.fsdecode(value)):
                raise Refused(_NO_FILE)
            return value
        if hasattr(value, "dask"):
            return value  # judged by the step when it is computed
        raw = getattr(value, "values", value)
        if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, (Sequence, np.ndarray)):
            raise Refused()
        try:
            arr = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise Refused() from None
        if arr.size == 0 or not (np.isfinite(arr).all() and (arr > 0).all()):
            raise Refused()
        return tuple(arr.reshape(-1).tolist()) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------- declarations


def _field(default, rule: Rule):
    return dataclasses.field(default=default, metadata={RULE: rule})


def boolean(default: bool, *, implemented: tuple | None = None, official: bool = True, note: str = ""):
    """An official ``boolean``; ``implemented=(False,)`` when only False is implemented."""
    return _field(default, Rule("boolean", implemented=implemented, official=official, note=note))


def floating(default, *, min=None, max=None, above=None, none: bool = False, official: bool = True,
             note: str = ""):
    """A ``float`` (finite) within ``[min, max]`` and ``> above``; None allowed with ``none``."""
    return _field(default, Rule("float", none=none, min=min, max=max, above=above,
                                official=official, note=note))


def integer(default, *, min=None, max=None, none: bool = False, official: bool = True, note: str = ""):
    """An ``integer`` within ``[min, max]``; None allowed with ``none``."""
    return _field(default, Rule("integer", none=none, min=min, max=max, official=official, note=note))


def string(default, *, none: bool = False, implemented: tuple | None = None, note: str = ""):
    """A ``string``; None allowed with ``none``; ``implemented=(None,)`` when daskramp
    implements only the official default None (any string given is refused)."""
    return _field(default, Rule("string", none=none, implemented=implemented, note=note))


def option(default, options: Sequence, *, implemented: Sequence | None = None, official: bool = True,
           note: str = ""):
    """An official ``option(...)``: one of ``options`` (case-sensitive; None in ``options``
    allows None); ``implemented``: the ones daskramp implements."""
    return _field(default, Rule("option", none=None in options, options=tuple(options),
                                implemented=None if implemented is None else tuple(implemented),
                                official=official, note=note))


def cores(default: str = "1", *, note: str = "accepted for compatibility; dask provides the parallelism"):
    """``maximum_cores``: an integer string, 'none'/'one' (any case), 'quarter', 'half', 'all'
    (the values stcal's ``compute_num_cores`` understands)."""
    return _field(default, Rule("cores", note=note))


def int_list(default, *, length: int, min=None, none: bool = False, note: str = ""):
    """An official ``int_list`` of exactly ``length`` integers ``>= min`` (a tuple)."""
    return _field(default, Rule("int_list", length=length, min=min, none=none, note=note))


def image(default=None, *, ndim: tuple[int, ...] = (2,), official: bool = True, note: str = ""):
    """A FITS file path (must exist) or an array of ``ndim`` dimensions, or None."""
    return _field(default, Rule("image", none=True, ndim=tuple(ndim), official=official, note=note))


def output_file(default=None, *, note: str = ""):
    """An official ``output_file``: a path to write, or None."""
    return _field(default, Rule("output_file", none=True, note=note))


def scale_list(default=None, *, note: str = ""):
    """A sequence of finite positive floats or an existing .npy/text file, or None."""
    return _field(default, Rule("scale_list", none=True, official=False, note=note))


# ---------------------------------------------------------------------- validator


def shown(value) -> str:
    """The value given, on one short line."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.ndim(value) > 0:
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def rules_of(cls: type, step: str) -> dict[str, Rule]:
    """``{parameter: Rule}`` of the ``Params`` class ``cls`` of ``step``, in declaration order."""
    out = {}
    for f in dataclasses.fields(cls):
        rule = f.metadata.get(RULE)
        if rule is None:  # a declaration error, not a configuration one
            raise TypeError(f"daskramp.steps.{step}.Params.{f.name} has no parameter rule "
                            f"(declare it with daskramp.params)")
        out[f.name] = rule
    return out


def coerce(step: str, name: str, value, rule: Rule):
    """One parameter's value as the step uses it, or a one-line :class:`ConfigError`."""
    where = f"steps.{step}.{name}"
    try:
        v = rule.coerce(value)
    except Refused as why:
        hint = why.hint.format(name=name)
        raise ConfigError(f"{where}: {shown(value)} is not allowed ({rule.allowed()}{hint})") from None
    if rule.implemented is not None and v not in rule.implemented:
        done = ", ".join(repr(i) for i in rule.implemented)
        raise NotImplementedParameter(
            f"{where}: {shown(value)} is an official value that daskramp does not implement "
            f"(implemented: {done})")
    return v


def validate_params(cls: type, step: str, given=None):
    """The frozen ``Params`` (class ``cls``) of ``step`` from ``given`` (a mapping, None, or
    a ``Params``).

    Raises :class:`ConfigError` (one line naming ``steps.<step>[.<param>]``) for a ``given``
    that is not a mapping, an unknown parameter or a value that is not allowed, and
    :class:`NotImplementedParameter` for an official value daskramp does not implement.
    (By step name, through the registry: :func:`daskramp.steps.validate`.)
    """
    if isinstance(given, cls):
        given = {f.name: getattr(given, f.name) for f in dataclasses.fields(cls)}
    elif given is None:
        given = {}
    elif not isinstance(given, Mapping):
        raise ConfigError(f"steps.{step}: expected a mapping of parameters, got {shown(given)}")
    known = rules_of(cls, step)
    values = {}
    for name, value in given.items():
        if name not in known:
            raise ConfigError(_unknown(step, name, known))
        values[name] = coerce(step, name, value, known[name])
    return cls(**values)


def _unknown(step: str, name, known) -> str:
    where = f"steps.{step}.{name}"
    if name in STEP_BASE_PARAMS:
        return (f"{where}: an official step parameter that daskramp does not implement "
                f"(outputs are chosen with save_steps and the output directory)")
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown parameter{hint}; {step}'s parameters are: {', '.join(known)}"


def check(params):
    """``params`` (a step's ``Params`` instance) validated: what the step wrappers call, so
    that a wrapper called directly refuses what the pipeline refuses."""
    cls = type(params)
    return validate_params(cls, cls.__module__.rsplit(".", 1)[-1], params)
