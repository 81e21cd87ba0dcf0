"""What one job of the workflow computes, from its input files to its output table or figure.

Each ``workflow/scripts/*.py`` reads ``snakemake.*``, calls one function here (or
:func:`convbias.train.train_run`) and writes the result; the functions know files and runs,
the modules they call know none.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .runs import DataParallelFailed, DiskFull, RunDamaged, RunFolder
from .specs import ClaimsSpec, FigureSpec, ModelSpec, PretrainedSpec, TrainSpec, digest


def log_to(log: Sequence[str], keep_attempts: bool = False) -> None:
    """Send everything this job prints — and its child processes (torchrun's, FFCV's) — to its
    rule's log file (``snakemake.log``), appending, and say there if a signal stops the job.

    ``keep_attempts``: the log keeps the lines of every attempt of the job — Snakemake deletes a
    rule's log before each rerun, so a resumed training job's log would lose the attempts before
    it, and a rerun that finds its run published would replace the log of the run that trained.
    The log is a hard link to :func:`attempts_file`, beside it (on a file system without hard
    links: a copy of the earlier attempts, and this attempt's lines in the log only)."""
    import os
    import shutil

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
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stopped(signum, frame):
        commits = sys.modules.get("convbias.commits")  # an epoch's commit in flight is finished first
        commit = commits.BackgroundCommits.finish_in_flight(COMMIT_GRACE) if commits is not None else None
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
    from .checkpoints import WeightsError
    from .data.sources import DatasetError
    from .stats import NonFiniteWeights

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
    import hashlib

    package = Path(__file__).resolve().parent
    sources = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        sources.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return sources.hexdigest()[:16]


def run_made_from(run_dir: str | Path) -> str | None:
    """What a finished run is, for the tables computed from it: the SHA-256 of its manifest (which
    records every file's checksum and the run's fingerprint); None without a readable manifest."""
    from .checkpoints import file_sha256

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
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .checkpoints import atomic_write

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


def run_filters(run_dir: str | Path, epochs: int, include_1x1: bool, experiment: str, seed: int) -> pd.DataFrame:
    """The per-filter table of a finished run: one row per (epoch, layer, filter) with its cosine."""
    from .stats import NonFiniteWeights, checkpoint_filters

    run = RunFolder(run_dir)
    manifest = run.verify(checksums=False)  # a manifest, every file there at its size; checksums as each is read
    order = run.conv_layers()  # the same layers in every epoch of a run
    keys = None if order is None else [f"{name}.weight" for name in order]
    stopped = manifest.get("stopped")  # a diverged run (RunFolder.stopped): its epochs end at the stop, the last ones NaN
    frames = []
    for epoch in range(epochs + 1 if stopped is None else stopped["epoch"] + 1):
        try:  # each file read once, and checked against the run's manifest as it is read
            table = checkpoint_filters(run.read_weights(epoch, keys), order, include_1x1=include_1x1)
        except NonFiniteWeights as err:
            if stopped is not None:
                break  # its epochs from here on have no directions
            raise NonFiniteWeights(f"{run.weights(epoch)}: {err}") from None
        table.insert(0, "epoch", epoch)
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "seed", seed)
    table.insert(0, "experiment", experiment)
    return table


def measure(filter_tables: Sequence[str | Path]) -> pd.DataFrame:
    """The per-layer measure (n_l, mean cosine, p-value) per (seed, epoch, layer) of per-filter tables."""
    from .stats import measure_table

    filters = pd.concat([pd.read_parquet(p) for p in filter_tables], ignore_index=True)
    return measure_table(filters, ["experiment", "seed", "epoch", "layer", "name"])


def run_reinit(spec: TrainSpec, seed: int, meta_file: str | Path, run_dir: str | Path, test_file: str | Path,
               experiment: str, epochs: Sequence[int], device: str = "auto", threads: int = 1) -> pd.DataFrame:
    """Re-initialization robustness of a finished run on the test set (see :mod:`convbias.reinit`):
    every conv layer reset to a fresh draw (``rand``) and to each of the saved ``epochs``
    (``ExperimentSpec.swept_epochs``)."""
    import torch

    from .checkpoints import load_weights
    from .data.dataset import DatasetMeta
    from .data.loaders import load_split
    from .data.transform import BatchTransform
    from .devices import resolve_device, set_precision, use_device
    from .models import init_model
    from .reinit import RAND_SEED_OFFSET, no_sweep, reinit_sweep

    meta, run = DatasetMeta.load(meta_file), RunFolder(run_dir)
    if run.stopped() is not None:  # diverged: no final weights to reset layers of (nothing is read)
        return no_sweep()
    run.verify()  # every epoch's file, against the run's manifest
    torch.set_num_threads(threads)
    device = resolve_device(device)
    use_device(device)
    set_precision(spec.precision)
    # the epochs' files are read lazily, one layer of one source at a time: memory does not grow
    # with the number of epochs (and a conv-only snapshot has all the sweep reads)
    sources = {"rand": init_model(spec, meta, seed + RAND_SEED_OFFSET).state_dict()}
    sources.update({str(epoch): run.weights(epoch) for epoch in epochs})
    images, labels = load_split(test_file, meta=meta, workers=threads)
    # the test set stays on the device as bytes; each chunk is scaled there when its turn comes
    model = init_model(spec, meta, seed).to(device, memory_format=torch.channels_last)
    table = reinit_sweep(model, load_weights(run.weights(spec.epochs)), sources, images.to(device), labels.to(device),
                         transform=BatchTransform(meta, device), precision=spec.precision)
    table.insert(0, "seed", seed)
    table.insert(0, "experiment", experiment)
    return table


def pretrained_filters(spec: PretrainedSpec, network: str) -> pd.DataFrame:
    """Per-filter table of a network trained elsewhere (epoch 1) and of a random initialization of
    its architecture (epoch 0).  Raises WeightsError (unreadable weights) or ValueError (the
    weights do not fit ``arch``)."""
    import torch

    from .models import build_model, conv_layers, initialize
    from .pretrained import read_filters
    from .stats import checkpoint_filters

    _, trained = read_filters(spec.weights, spec.include_1x1, spec.download)
    torch.manual_seed(spec.seed)
    model = build_model(ModelSpec(spec.arch, head="torchvision"), 3, 1000, 224)
    model = initialize(model, spec.init, spec.init_std)
    init = checkpoint_filters(model.state_dict(), [name for name, _ in conv_layers(model)],
                              include_1x1=spec.include_1x1)
    if init["layer"].max() != trained["layer"].max():
        raise ValueError(f"the weights have {trained['layer'].max()} conv layers but {spec.arch} has "
                         f"{init['layer'].max()}; check arch")
    table = pd.concat([init.assign(epoch=0), trained.assign(epoch=1)], ignore_index=True)
    table.insert(0, "network", network)
    return table


def figure(spec: FigureSpec, inputs: Mapping[str, Sequence[str | Path]], runs: Sequence[tuple[str, int]] = (),
           scales: Sequence[Mapping] = ()):
    """Draw one figure of the config from its tables: ``inputs`` maps each table its kind reads
    (:data:`convbias.figures.KINDS`) to its files; ``runs`` names the (experiment, seed) of each
    run folder of the ``histories`` table, in order; ``scales`` are the rows of the ``scales`` table."""
    from .figures import KINDS

    tables = {"scales": pd.DataFrame(list(scales))} if "scales" in KINDS[spec.kind].tables else {}
    for name, paths in inputs.items():
        if name == "histories":
            frames = [verified_history(p).assign(experiment=e, seed=s) for p, (e, s) in zip(paths, runs, strict=True)]
        else:
            frames = [pd.read_csv(p) if str(p).endswith(".csv") else pd.read_parquet(p) for p in paths]
        table = pd.concat(frames, ignore_index=True)
        if spec.seeds is not None and "seed" in table:  # the runs the figure draws (its ``seeds``)
            table = table[table["seed"].isin(spec.seeds)].reset_index(drop=True)
        tables[name] = table
    return KINDS[spec.kind].draw(tables, spec)


def claims(spec: ClaimsSpec, experiments: Mapping[str, Mapping], evidence_dir: str | Path | None = None) -> pd.DataFrame:
    """The claims scorecard (:mod:`convbias.claims`) of ``experiments``: for each, its ``measure``
    table file, its ``runs`` (seed → run folder), its ``reinit`` table files (none: no sweep),
    its dataset's ``meta`` and its ``expect_learning``. The tables it read go to ``evidence_dir``
    (:func:`convbias.evidence.write_evidence`), from which ``convbias claims`` scores them again."""
    from .claims import Evidence, scorecard
    from .data.dataset import DatasetMeta
    from .evidence import write_evidence

    evidence = []
    for name, files in experiments.items():
        meta = DatasetMeta.load(files["meta"])
        history = pd.concat([verified_history(run).assign(seed=int(seed)) for seed, run in files["runs"].items()],
                            ignore_index=True)
        reinit = pd.concat([pd.read_parquet(p) for p in files["reinit"]], ignore_index=True) if files["reinit"] else None
        evidence.append(Evidence(name, pd.read_parquet(files["measure"]), history, reinit, meta.num_classes,
                                 meta.shape[2], files["expect"], len(meta.val_indices())))
    if evidence_dir is not None:
        write_evidence(evidence, evidence_dir)
    return scorecard(evidence, spec)


def verified_history(run_dir: str | Path) -> pd.DataFrame:
    """A finished run's history, after checking its file against the run's manifest."""
    run = RunFolder(run_dir)
    run.verify([RunFolder.HISTORY])
    return run.history()
