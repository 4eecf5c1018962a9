"""The configuration error, below every module that raises it.

:class:`ConfigError` lives here, not in :mod:`daskramp.config`, so that the modules that
configuration reading needs (:mod:`daskramp.params`, the step registry :mod:`daskramp.steps`,
:mod:`daskramp.parsfile`) raise it without importing :mod:`daskramp.config`, which imports
them.  ``from daskramp.config import ConfigError`` is the same class.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A workflow file, environment variable or command-line override is malformed."""


__all__ = ["ConfigError"]
