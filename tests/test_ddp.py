"""Data-parallel training in two processes (torchrun, gloo on the CPU): the one-process step, the
one-process learning curve, and a full disk that ends the job with the failing process's sentence."""

import pandas as pd
import pytest
import torch

from convbias.checkpoints import load_weights
from convbias.data.convert import convert
from convbias.specs import DatasetSpec, TrainSpec
from convbias.train import launch, train_run
from train_common import SPEC, data  # noqa: F401 (fixtures)


@pytest.mark.subprocess
def _ddp_data(tmp_path, n_train: int):
    data = DatasetSpec.from_config({"source": "synthetic", "synthetic": {"n_train": n_train, "n_test": 200, "size": 28,
                                                                         "channels": 1},
                                    "pad": 0, "val_fraction": 0.1, "split_seed": 0, "hflip": True,
                                    "pixel_range": "standardize"})
    meta = convert("noisy", data, tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "meta.json")
    return meta, tmp_path / "train.beton", tmp_path / "test.beton"


def _one_and_two_processes(tmp_path, meta, train, test, spec, seed=4):
    """The history of ``spec`` trained in one process, and in two gloo processes under torchrun."""
    single = train_run(spec, seed, meta, train, test, tmp_path / "one", tmp_path / "w1", device="cpu")
    job = {"spec": spec.to_dict(), "seed": seed, "meta": str(tmp_path / "meta.json"), "train_file": str(train),
           "test_file": str(test), "out_dir": str(tmp_path / "two"), "work_dir": str(tmp_path / "w2"),
           "device": "cpu", "threads": 1, "order": "random", "os_cache": True}
    launch(job, 2)
    assert (tmp_path / "w2" / "published.json").exists()  # published (the work folder stays until the workflow ends)
    return single, pd.read_parquet(tmp_path / "two" / "history.parquet")


def test_two_process_ddp_takes_the_one_process_step(tmp_path):
    """One global batch of 32 (36 images, 4 of them validation): the two processes' gradients of
    their 16 images, averaged, are the one process's gradient up to summation order, so from the
    same initialization the step agrees to float32 rounding — no kink of the loss can amplify a
    difference within one step. Losses are computed before the step: equal to rounding too."""
    meta, train, test = _ddp_data(tmp_path, 36)
    spec = TrainSpec(**{**SPEC.__dict__, "batch_size": 32, "epochs": 1, "augment": False, "lr": 0.05})
    single, double = _one_and_two_processes(tmp_path, meta, train, test, spec)
    assert double["train_loss"].iloc[1] == pytest.approx(single["train_loss"].iloc[1], rel=1e-5)
    w0 = load_weights(tmp_path / "one" / "epoch000.safetensors")
    a, b = (load_weights(tmp_path / run / "epoch001.safetensors") for run in ("one", "two"))
    assert all(torch.equal(w0[k], load_weights(tmp_path / "two" / "epoch000.safetensors")[k]) for k in w0)
    update = max((a[k] - w0[k]).abs().max().item() for k in a)
    assert update > 1e-4  # a real step
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4 * update


def test_two_process_ddp_learns_like_one_process(tmp_path):
    """Two epochs (720 images, 22 batches of 32 and one of 16): the two-process run learns as the
    one-process run does. Not equal: summation order differs, and a last-bit difference that
    crosses a kink (a ReLU or a max-pool switch) grows — on an AVX-512 CPU the epoch-2 train
    loss was 0.241 vs 0.220. The tolerance, 0.15, is a quarter of the spread between seeds of
    this run (epoch-2 train loss 0.22–2.17 over seeds 4–11, std 0.65, measured): a data-parallel
    run that differed like another seed would fail."""
    meta, train, test = _ddp_data(tmp_path, 800)
    spec = TrainSpec(**{**SPEC.__dict__, "batch_size": 32, "epochs": 2, "augment": False, "lr": 0.002})
    single, double = _one_and_two_processes(tmp_path, meta, train, test, spec)
    assert single["train_loss"].iloc[2] < 0.6 * single["train_loss"].iloc[1]  # it learns
    assert double["train_loss"].iloc[2] < 0.6 * double["train_loss"].iloc[1]
    for column in ("train_loss", "val_loss", "test_loss"):
        assert double[column].to_numpy() == pytest.approx(single[column].to_numpy(), abs=0.15, nan_ok=True), column
    for column in ("train_acc", "val_acc", "test_acc"):
        assert double[column].to_numpy() == pytest.approx(single[column].to_numpy(), abs=0.1, nan_ok=True), column


@pytest.mark.subprocess
def test_a_full_disk_in_a_data_parallel_run_ends_the_job_with_the_processs_one_sentence(tmp_path, monkeypatch):
    """Rank 0 of a two-process run meets a full disk at its first commit (every weights file fails with
    ENOSPC, injected into torchrun's processes by a sitecustomize): launch raises one sentence — the
    process's own, naming the work folder and the space needed — which the job prints alone."""
    import errno
    import os

    from convbias.harness import stops_with_one_sentence
    from convbias.runs import DataParallelFailed

    meta, train, test = _ddp_data(tmp_path, 100)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(f"""
import errno, os
if os.environ.get("LOCAL_RANK") is not None:  # torchrun's processes only
    import convbias.runs.work
    def full(path, *args, **kwargs):
        raise OSError({errno.ENOSPC}, "No space left on device", str(path))
    convbias.runs.work.save_weights = full
""")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    spec = TrainSpec(**{**SPEC.__dict__, "batch_size": 32, "epochs": 1})
    work = tmp_path / "w2"
    job = {"spec": spec.to_dict(), "seed": 4, "meta": str(tmp_path / "meta.json"), "train_file": str(train),
           "test_file": str(test), "out_dir": str(tmp_path / "two"), "work_dir": str(work),
           "device": "cpu", "threads": 1, "order": "random", "os_cache": True}
    with pytest.raises(SystemExit) as stop, stops_with_one_sentence():
        launch(job, 2)
    message = str(stop.value.code)
    assert message.startswith(f"error: data-parallel training failed: no space left on the disk of {work}: "
                              f"this run needs about "), message
    assert "\n" not in message and "resumes from the last epoch whose full state was saved" in message
    assert not list(tmp_path.glob(".w2-job-*"))  # the job file and its error file are gone
    assert issubclass(DataParallelFailed, RuntimeError)  # as launch raised before
