"""What each job of the workflow computes, from its input files to its output table or figure.

Each ``workflow/scripts/*.py`` reads ``snakemake.*``, calls one function here (or
:func:`convbias.train.train_run`) and writes the result; the functions know files and runs, the
modules they call know none.  What every job shares besides (its log, signals, one-sentence
errors, the content cache): :mod:`convbias.harness`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .checkpoints import load_weights
from .claims import Evidence, scorecard
from .data.dataset import DatasetMeta
from .evidence import write_evidence
from .runs import RunFolder
from .specs import ClaimsSpec, FigureSpec, ModelSpec, PretrainedSpec, TrainSpec
from .stats import NonFiniteWeights, checkpoint_filters, measure_table

# Lazy imports, measured: torch (with torchvision and FFCV) is imported by the two functions that
# compute with it, and matplotlib by `figure`, not here: the filters, measure and claims jobs need
# neither. `import convbias.jobs` takes 0.6 s CPU as it is; with the models and loaders imported at
# the top 4.7 s (+4.1 s for every job), with convbias.figures 1.1 s (+0.5 s); 2 cores, 5 runs each.


def run_filters(run_dir: str | Path, epochs: int, include_1x1: bool, experiment: str, seed: int) -> pd.DataFrame:
    """The per-filter table of a finished run: one row per (epoch, layer, filter) with its cosine."""
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
    filters = pd.concat([pd.read_parquet(p) for p in filter_tables], ignore_index=True)
    return measure_table(filters, ["experiment", "seed", "epoch", "layer", "name"])


def run_reinit(spec: TrainSpec, seed: int, meta_file: str | Path, run_dir: str | Path, test_file: str | Path,
               experiment: str, epochs: Sequence[int], device: str = "auto", threads: int = 1) -> pd.DataFrame:
    """Re-initialization robustness of a finished run on the test set (see :mod:`convbias.reinit`):
    every conv layer reset to a fresh draw (``rand``) and to each of the saved ``epochs``
    (``ExperimentSpec.swept_epochs``)."""
    import torch  # lazy: see the note on imports above

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
    import torch  # lazy: see the note on imports above

    from .models import build_model, conv_layers, initialize
    from .pretrained import read_filters

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
    from .figures import KINDS  # lazy: see the note on imports above

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
