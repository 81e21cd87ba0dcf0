"""How a rule hands its job what it built from the config: job parameters (``params:``).

Snakemake reruns a job when a parameter changes, and it compares parameters by ``repr`` — of
values of builtin types only (``str``, ``int``, ``dict``, ``list``, …): a value of another type
is not recorded, so it never makes a job rerun.  Hence two kinds of parameter:

- :func:`spec_param`: what defines the job's output — a spec's identity, as a ``dict`` (or
  ``str``) that Snakemake records — carrying the whole typed spec the rule built
  (``snakemake.params.spec.typed``), which the job uses as it is.  What the typed spec holds
  beyond its identity (where the files are, where and how fast the job computes) reaches the job
  the same way without being recorded: changing it reruns nothing (``config/README.md``, "How a
  value travels").
- :func:`shown`: any other parameter, shown readably in the report's job details
  (``key: value; …`` instead of a Python dict), of the same ``repr``: wrapping one reruns nothing.
"""

from __future__ import annotations

from collections.abc import Mapping


class ShownDict(dict):
    """A job parameter as the report's job details show it: ``key: value; …`` instead of a Python
    dict. ``repr`` is a dict's, which is what Snakemake compares to decide that a parameter
    changed: wrapping one reruns nothing."""

    def __str__(self) -> str:
        return "; ".join(f"{key}: {_nested(value)}" for key, value in self.items()) or "none"


class ShownList(list):
    """A list parameter shown as ``a; b; c`` (``repr`` is a list's); Snakemake separates
    parameters by commas, a list inside one shows as ``[a, b]``."""

    def __str__(self) -> str:
        return "; ".join(_nested(value) for value in self) or "none"


def _nested(value) -> str:
    if isinstance(value, Mapping):
        return f"({ShownDict(value)})" if value else "none"
    if isinstance(value, tuple):
        return " ".join(_nested(v) for v in value)
    if isinstance(value, list):
        return "[" + ", ".join(_nested(v) for v in value) + "]" if value else "none"
    return " ".join(str(value).split())  # a caption's line breaks and indents


def shown(value):
    """``value`` (a job parameter: dicts, lists, tuples, scalars) with each dict and list in it
    shown as :class:`ShownDict` / :class:`ShownList`; equal to it, and of the same ``repr``."""
    if isinstance(value, Mapping):
        return ShownDict({key: shown(v) for key, v in value.items()})
    if isinstance(value, list):
        return ShownList(shown(v) for v in value)
    if isinstance(value, tuple):
        return tuple(shown(v) for v in value)
    return value


class ShownAs(ShownDict):
    """A dict parameter shown in the report's job details as the short ``text`` given (a parameter
    of many file paths: unbreakable words, cut off at the edge of the report's narrow column),
    recorded as the dict, of the same ``repr``."""

    def __init__(self, value: Mapping, text: str):
        super().__init__(shown(value))
        self.text = text

    def __str__(self) -> str:
        return self.text


class SpecDict(ShownDict):
    """A spec's identity as a job parameter (a :class:`ShownDict`), carrying the typed spec: ``typed``."""

    typed = None


class SpecStr(str):
    """A spec's identity that is one string (a source's name) as a job parameter, carrying the typed spec."""

    typed = None


def spec_param(typed, identity=None) -> SpecDict | SpecStr:
    """The job parameter of the typed spec ``typed``: equal to its ``identity`` (default
    ``typed.identity()``), which Snakemake records and reruns the job on, with ``typed`` itself
    as the parameter's ``typed``, which Snakemake does not record.  Survives pickling (how
    Snakemake hands parameters to a script)."""
    identity = typed.identity() if identity is None else identity
    param = SpecStr(identity) if isinstance(identity, str) else SpecDict(shown(identity))
    param.typed = typed
    return param
