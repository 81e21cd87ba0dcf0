"""What every job of the workflow shares, whatever it computes: its log, how a signal stops it, its
one-sentence errors, and the content cache that keeps a table whose inputs did not change.

Each ``workflow/scripts/*.py`` calls :func:`log_to` first, wraps its work in
:func:`stops_with_one_sentence` and, where recomputing is costly, writes through
:func:`write_unless_kept`; what it computes is :mod:`convbias.jobs` (or :mod:`convbias.train`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .checkpoints import WeightsError, atomic_write, file_sha256
from .data.sources import DatasetError
from .runs import DataParallelFailed, DiskFull, RunDamaged, RunFolder
from .runs.commits import BackgroundCommits
from .specs import digest
from .stats import NonFiniteWeights


def log_to(log: Sequence[str], keep_attempts: bool = False) -> None:
    """Send everything this job prints — and its child processes (torchrun's, FFCV's) — to its
    rule's log file (``snakemake.log``), appending, and say there if a signal stops the job.

    ``keep_attempts``: the log keeps the lines of every attempt of the job — Snakemake deletes a
    rule's log before each rerun, so a resumed training job's log would lose the attempts before
    it, and a rerun that finds its run published would replace the log of the run that trained.
    The log is a hard link to :func:`attempts_file`, beside it (on a file system without hard
    links: a copy of the earlier attempts, and this attempt's lines in the log only)."""
    if not log:
        return
    path = Path(log[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    if keep_attempts:
        keep = attempts_file(path)
        os.close(os.open(keep, flags, 0o644))
        path.unlink(missing_ok=True)
        try:
            os.link(keep, path)
        except OSError:
            shutil.copyfile(keep, path)
    fd = os.open(path, flags, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _say_when_stopped()


def attempts_file(log: str | Path) -> Path:
    """The file that keeps every attempt of the job whose log is ``log`` (:func:`log_to`): hidden
    beside it, on its file system."""
    log = Path(log)
    return log.with_name(f".{log.name}.attempts")


COMMIT_GRACE = 20  # s a stopped job gives an epoch's commit in flight (Slurm's default KillWait is 30 s)


def _say_when_stopped() -> None:
    """A job stopped by SIGTERM (Slurm's time limit, scancel, Snakemake stopping) says so in its log,
    then ends as SIGTERM would have ended it.  Only in the main thread (where Python handles signals)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stopped(signum, frame):
        commit = BackgroundCommits.finish_in_flight(COMMIT_GRACE)  # an epoch's commit in flight is finished first
        if commit is not None:
            print(commit, file=sys.stderr, flush=True)
        print(f"stopped by {signal.Signals(signum).name} (a time limit, scancel or Snakemake stopping): what it "
              f"finished is kept; run snakemake again to continue from there", file=sys.stderr, flush=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stopped)


@contextlib.contextmanager
def stops_with_one_sentence(also_to: str | Path | None = None):
    """A job that meets a damaged run, an unreadable weights file, a failed download or a full disk stops with
    the message alone (it names the file and the fix), not a traceback.  ``also_to``: a file the
    sentence is written to as well (a data-parallel process's, for :func:`convbias.train.launch`)."""
    try:
        yield
    except (RunDamaged, WeightsError, NonFiniteWeights, DatasetError, DiskFull, DataParallelFailed) as err:
        if also_to is not None:
            with contextlib.suppress(OSError):
                Path(also_to).write_text(str(err))
        sys.exit(f"error: {err}")


MADE_FROM = b"convbias.made_from"  # the parquet metadata key of a table's inputs digest


def code_digest() -> str:
    """A digest of this convbias's own code (every module's source): a table computed by other code
    is not kept by :func:`write_unless_kept`."""
    package = Path(__file__).resolve().parent
    sources = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        sources.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return sources.hexdigest()[:16]


def run_made_from(run_dir: str | Path) -> str | None:
    """What a finished run is, for the tables computed from it: the SHA-256 of its manifest (which
    records every file's checksum and the run's fingerprint); None without a readable manifest."""
    try:
        return file_sha256(RunFolder(run_dir).manifest_file)
    except OSError:
        return None


def write_unless_kept(output: str | Path, made_from: Mapping, compute) -> pd.DataFrame | None:
    """Write the table ``compute()`` returns to ``output`` (atomically, recording the digest of
    ``made_from`` and of :func:`code_digest` in its metadata) — unless ``output`` already is the
    table of exactly those inputs and code: then it is kept, its file time set to now, and nothing
    is computed (None is returned).

    Snakemake reruns a job whose inputs are newer than its output, whatever their content: after
    ``touch``, ``cp -r`` or a restored backup every re-initialization sweep (a GPU job) would run
    again.  ``made_from`` names the inputs by content (a run's manifest, a dataset's fingerprint,
    the job's parameters); the rule declares the output ``update()`` so that Snakemake leaves the
    old table in place for this check.  Any value None in ``made_from`` means unknown: computed."""
    output = Path(output)
    inputs = None if None in made_from.values() else digest({**made_from, "code": code_digest()}).encode()
    try:
        recorded = (pq.read_schema(output).metadata or {}).get(MADE_FROM)
    except (OSError, pa.ArrowException):
        recorded = None
    if inputs is not None and recorded == inputs:
        os.utime(output)
        print(f"{output} is already the table of these inputs ({', '.join(sorted(made_from))}) and this code: "
              f"kept, nothing recomputed (only file times had changed)", file=sys.stderr, flush=True)
        return None
    table = compute()
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if inputs is not None:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), MADE_FROM: inputs})
    atomic_write(output, lambda tmp: pq.write_table(arrow, tmp))
    return table
