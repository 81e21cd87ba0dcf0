"""numba's typed-dict helpers cached on disk, so that importing FFCV compiles nothing.

``import ffcv`` builds a ``numba.typed.Dict`` (``ffcv.fields.rgb_image.IMAGE_MODES``), which
makes numba compile its typed-dict helpers in every process: about 2.2 s of CPU, in every
convert, train and reinit job, before any work.  numba can keep compiled code on disk
(``cache=True``, in ``__pycache__`` beside its sources or in ``NUMBA_CACHE_DIR``) but does not
for these helpers; :func:`cache_typed_dict_helpers` turns that on before FFCV is imported, so
only the first process on a machine compiles them (then 0.25 s).  numba recompiles by itself
when its sources change or on another kind of CPU; should a numba release rename the helpers,
nothing is cached and nothing else changes.
"""

from __future__ import annotations

_HELPERS = ("_make_dict", "_setitem", "_getitem", "_length", "_contains")


def cache_typed_dict_helpers() -> None:
    """Call before the first ``import ffcv`` of a process (``convbias.data.loaders`` does, on import)."""
    try:
        from numba.typed import typeddict

        for name in _HELPERS:
            getattr(typeddict, name).enable_caching()
    except (ImportError, AttributeError):  # another numba: FFCV's import only stays slower
        pass
