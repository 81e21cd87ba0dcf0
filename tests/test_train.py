import numpy as np
import pandas as pd
import pytest
import torch

from convbias.checkpoints import load_weights, read_metadata
from convbias.specs import DatasetSpec, ModelSpec, TrainSpec
from convbias.data.convert import convert
from convbias.data.dataset import DatasetMeta
from convbias.data.loaders import make_loader
from convbias.data.transform import BatchTransform
from convbias.models import conv_layers, init_model
from convbias.runs import RunFolder
from convbias.train import HISTORY_COLUMNS, evaluate, launch, train_run

SPEC = TrainSpec(model=ModelSpec("lenet", hidden=32, dropout=0.0), epochs=3, batch_size=16, lr=0.01)
# dropout draws random numbers in every step: resuming must reproduce them too
DROPOUT = TrainSpec(**{**SPEC.__dict__, "model": ModelSpec("lenet", width=0.5, hidden=32, dropout=0.5)})


@pytest.fixture(scope="module")
def data(tiny_converted):
    return tiny_converted


def test_training_writes_every_epoch_and_learns(data, tmp_path, capsys):
    meta, train, test = data
    history = train_run(SPEC, 0, meta, train, test, tmp_path / "run", tmp_path / "work", stall_epochs=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if " epoch " in line]
    assert len(lines) == 3 and not any("not learning" in line for line in lines)  # it learns: no warning
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [f"epoch{e:03d}.safetensors" for e in range(4)] + ["history.parquet", "manifest.json"]
    assert (tmp_path / "work" / "published.json").exists()  # until the workflow drops it (test_runs.py)
    assert list(pd.read_parquet(run / "history.parquet").columns) == HISTORY_COLUMNS
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert history["test_acc"].iloc[-1] > history["test_acc"].iloc[0] + 0.2
    meta0 = read_metadata(run / "epoch000.safetensors")
    assert meta0["epoch"] == 0 and meta0["conv_layers"][0] == "features.0"
    assert RunFolder(run).conv_layers() == [name for name, _ in conv_layers(init_model(SPEC, meta, 0))]


def test_a_run_at_chance_says_so_in_its_epoch_lines_after_stall_epochs_and_trains_on(data, tmp_path, capsys):
    """Weights of std 1e-4 and a learning rate of 1e-6: the logits stay ~0, the loss at ln 10."""
    meta, train, test = data
    stuck = TrainSpec(**{**SPEC.__dict__, "init": "normal", "init_std": 1e-4, "lr": 1e-6})
    history = train_run(stuck, 0, meta, train, test, tmp_path / "run", tmp_path / "work", stall_epochs=2)
    assert list(history["epoch"]) == [0, 1, 2, 3]  # the warning never stops a run
    lines = [line for line in capsys.readouterr().err.splitlines() if " epoch " in line]
    assert [line.split(": lr")[0].rsplit(" ", 1)[-1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "not learning" not in lines[0]  # one epoch at chance is not yet a stall of 2
    assert all(line.endswith("; not learning — train loss at ln 10 since epoch 1") for line in lines[1:])


def test_a_last_batch_of_one_image_trains_and_evaluates(tmp_path):
    """129 training images in batches of 128: the last batch holds one image (its label stays a vector)."""
    from convbias.data.loaders import write_beton

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (143, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, 143)
    write_beton(tmp_path / "train.beton", images, labels)
    write_beton(tmp_path / "test.beton", images[:1], labels[:1])  # a test set of one image
    meta = DatasetMeta("one", 10, (8, 8, 1), 143, 1, 0.1, 0, False, "unit", (0.0,), (255.0,))
    assert len(meta.train_indices()) == 129
    spec = TrainSpec(model=ModelSpec("lenet", width=0.5, hidden=8, dropout=0.0), epochs=1, batch_size=128)
    history = train_run(spec, 0, meta, tmp_path / "train.beton", tmp_path / "test.beton", tmp_path / "run",
                        tmp_path / "work")
    assert list(history["epoch"]) == [0, 1] and history["test_acc"].isin([0.0, 1.0]).all()


def test_evaluate_averages_over_every_batch_of_the_loader(data):
    """200 test images in batches of 64 (the last one 8): the mean over all of them, as in one batch."""
    meta, _, test = data
    model, transform = init_model(SPEC, meta, 0), BatchTransform(meta)
    whole = evaluate(model, make_loader(test, 512, meta=meta), transform, "fp32")
    batched = evaluate(model, make_loader(test, 64, meta=meta), transform, "fp32")
    assert [float(v) for v in batched] == pytest.approx([float(v) for v in whole], rel=1e-5)


@pytest.mark.parametrize("order,os_cache,shuffle", [("random", True, False), ("quasi_random", False, False),
                                                   ("random", True, True)])
def test_resume_is_bit_identical(data, tmp_path, order, os_cache, shuffle):
    """Also with pixel_shuffle per_image_train (``shuffle``), whose batches need their file indices."""
    import dataclasses

    meta, train, test = data
    meta = dataclasses.replace(meta, train_pixel_shuffle_seed=3) if shuffle else meta
    loading = {"order": order, "os_cache": os_cache}
    train_run(DROPOUT, 1, meta, train, test, tmp_path / "full", tmp_path / "w1", **loading)
    train_run(DROPOUT, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", stop_after=1, **loading)
    assert (tmp_path / "w2" / "progress.json").exists() and not (tmp_path / "part").exists()
    committed = (tmp_path / "w2" / "epoch001.safetensors").stat()
    history = train_run(DROPOUT, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", **loading)
    resumed = (tmp_path / "part" / "epoch001.safetensors").stat()  # the committed file, not epoch 1 trained again
    assert (resumed.st_ino, resumed.st_mtime_ns) == (committed.st_ino, committed.st_mtime_ns)
    assert list(history["epoch"]) == [0, 1, 2, 3]
    for e in range(4):
        a = load_weights(tmp_path / "full" / f"epoch{e:03d}.safetensors")
        b = load_weights(tmp_path / "part" / f"epoch{e:03d}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), e


def test_changed_spec_starts_over(data, tmp_path):
    meta, train, test = data
    stopped = train_run(SPEC, 2, meta, train, test, tmp_path / "run", tmp_path / "work", stop_after=1)
    other = TrainSpec(**{**SPEC.__dict__, "lr": 2 * SPEC.lr})
    history = train_run(other, 2, meta, train, test, tmp_path / "run", tmp_path / "work")
    fresh = train_run(other, 2, meta, train, test, tmp_path / "fresh", tmp_path / "work2")
    pd.testing.assert_series_equal(history["train_loss"], fresh["train_loss"])
    assert history["lr"].iloc[1] == 2 * SPEC.lr and stopped["lr"].iloc[1] == SPEC.lr
    assert history["train_loss"].iloc[1] != stopped["train_loss"].iloc[1]  # epoch 1 was trained again


def test_a_run_interrupted_on_other_data_starts_over(idx_dataset, tmp_path):
    """Interrupted on clean labels, continued after the dataset got label noise: the run trains
    again from epoch 0 on the new labels (the dataset's fingerprint is part of the run's)."""
    spec = {"source": "mnist", "path": str(idx_dataset), "pad": 0, "val_fraction": 0.1, "split_seed": 0,
            "hflip": True, "pixel_range": "minus_one_one"}
    clean = convert("d", DatasetSpec.from_config(spec),
                    tmp_path / "a" / "train.beton", tmp_path / "a" / "test.beton", tmp_path / "a" / "m.json")
    noisy = convert("d", DatasetSpec.from_config({**spec, "label_noise": 0.5}),
                    tmp_path / "b" / "train.beton", tmp_path / "b" / "test.beton",
                    tmp_path / "b" / "m.json")
    assert clean.fingerprint != noisy.fingerprint and len(clean.fingerprint) == 16
    short = TrainSpec(**{**SPEC.__dict__, "epochs": 2})
    files = lambda d: (tmp_path / d / "train.beton", tmp_path / d / "test.beton")  # noqa: E731
    train_run(short, 0, clean, *files("a"), tmp_path / "run", tmp_path / "work", stop_after=1)
    interrupted = load_weights(tmp_path / "work" / "epoch001.safetensors")
    history = train_run(short, 0, noisy, *files("b"), tmp_path / "run", tmp_path / "work")
    fresh = train_run(short, 0, noisy, *files("b"), tmp_path / "fresh", tmp_path / "work2")
    timing = ["seconds", "images_per_second"]
    pd.testing.assert_frame_equal(history.drop(columns=timing), fresh.drop(columns=timing))
    resumed = load_weights(tmp_path / "run" / "epoch001.safetensors")
    assert all(torch.equal(resumed[k], load_weights(tmp_path / "fresh" / "epoch001.safetensors")[k]) for k in resumed)
    assert not torch.equal(resumed["features.0.weight"], interrupted["features.0.weight"])


KILLABLE = """
import sys
from convbias.specs import TrainSpec
from convbias.data.dataset import DatasetMeta
from convbias.train import train_run
spec = TrainSpec.from_dict({spec!r})
train_run(spec, 3, DatasetMeta.load({meta!r}), {train!r}, {test!r}, sys.argv[1], sys.argv[2])
"""


@pytest.mark.subprocess
def test_sigkill_mid_run_then_rerun_is_bit_identical(data, tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    meta, train, test = data
    spec = TrainSpec(**{**DROPOUT.__dict__, "epochs": 6})
    script = tmp_path / "train.py"
    script.write_text(KILLABLE.format(spec=spec.to_dict(), meta=str(train.with_name("meta.json")),
                                      train=str(train), test=str(test)))
    run = lambda out, work: subprocess.Popen([sys.executable, str(script), str(tmp_path / out), str(tmp_path / work)],  # noqa: E731
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "w_killed" / "progress.json"
    victim = run("killed", "w_killed")
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["epoch"] >= 2:
            break
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = json.loads(progress.read_text())["epoch"]
    assert 2 <= killed_at < 6 and not (tmp_path / "killed").exists()

    resumed = run("killed", "w_killed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming from epoch {killed_at}" in err
    reference = run("reference", "w_reference")
    reference.communicate(timeout=300)
    assert reference.returncode == 0
    for e in range(7):
        a = load_weights(tmp_path / "reference" / f"epoch{e:03d}.safetensors")
        b = load_weights(tmp_path / "killed" / f"epoch{e:03d}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), e
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "reference" / "history.parquet").drop(columns=["seconds", "images_per_second"]),
        pd.read_parquet(tmp_path / "killed" / "history.parquet").drop(columns=["seconds", "images_per_second"]))


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"compile": True}, {"compile": "reduce-overhead"}],
                         ids=["bf16", "compile", "reduce-overhead"])
def test_bf16_and_compile_options_train(data, tmp_path, options, monkeypatch):
    meta, train, test = data
    spec = TrainSpec(**{**SPEC.__dict__, "epochs": 1, **options})
    compiled, compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(kw) or compile(model, **kw))
    history = train_run(spec, 0, meta, train, test, tmp_path / "run", tmp_path / "work")
    assert compiled == ([] if not spec.compile else [{"mode": "reduce-overhead"}] if spec.compile == "reduce-overhead"
                        else [{}])
    assert history["train_loss"].notna().iloc[1:].all()
    weights = load_weights(tmp_path / "run" / "epoch001.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert not torch.equal(weights["features.0.weight"], load_weights(tmp_path / "run" / "epoch000.safetensors")["features.0.weight"])


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


def test_momentum_restored_on_resume_has_the_parameters_layout(data, tmp_path):
    """SGD's multi-tensor path needs each momentum buffer laid out like its (channels-last) parameter."""
    from convbias.runs.work import WorkFolder

    meta, train, test = data
    train_run(SPEC, 0, meta, train, test, tmp_path / "run", tmp_path / "work", stop_after=1)
    model = init_model(SPEC, meta, 0).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    WorkFolder(tmp_path / "work", "unused").restore(1, model, optimizer)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    for p in model.parameters():
        buffer = optimizer.state[p]["momentum_buffer"]
        assert buffer.stride() == p.stride() and buffer.abs().sum() > 0


def test_each_process_draws_its_own_dropout_masks():
    from convbias.train import dropout_seed, epoch_seed

    assert dropout_seed(3, 7, 0) == epoch_seed(3, 7)  # one process: the single-process run
    seeds = {dropout_seed(s, e, r) for s in range(3) for e in range(1, 50) for r in range(8)}
    assert len(seeds) == 3 * 49 * 8


def test_compile_warmup_changes_nothing_but_the_compiled_code(data):
    from convbias.train import compile_warmup

    meta, _, _ = data
    model = init_model(DROPOUT, meta, 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    compile_warmup(model, optimizer, BatchTransform(meta), meta, [16, 9], "fp32")
    assert calls == [16, 9]  # one training pass per batch size of an epoch
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew from a forked generator
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and not optimizer.state


def test_each_epoch_augments_with_its_own_seed_and_every_step_uses_the_schedules_lr(data, tmp_path, monkeypatch):
    """Spies on what the loop hands to the transform and to SGD, against values computed here."""
    from convbias.specs import Schedule

    meta, train, test = data
    seeds, augmented, lrs = [], [], []
    draw_epoch, call, step = BatchTransform.draw_epoch, BatchTransform.__call__, torch.optim.SGD.step

    def spy_draw(self, sizes, generator, device="cpu"):
        seeds.append(generator.initial_seed())
        return draw_epoch(self, sizes, generator, device)

    def spy_call(self, x, *args, **kwargs):
        augmented.append(kwargs.get("draws") is not None)
        return call(self, x, *args, **kwargs)

    def spy_step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(BatchTransform, "draw_epoch", spy_draw)
    monkeypatch.setattr(BatchTransform, "__call__", spy_call)
    monkeypatch.setattr(torch.optim.SGD, "step", spy_step)
    spec = TrainSpec(**{**SPEC.__dict__, "schedule": Schedule("step", gamma=0.1, step_size=1)})
    history = train_run(spec, 5, meta, train, test, tmp_path / "run", tmp_path / "work")
    assert seeds == [5 * 100_003 + e for e in (1, 2, 3)]  # one generator per (seed, epoch)
    steps = -(-len(meta.train_indices()) // spec.batch_size)
    assert lrs == pytest.approx([0.01] * steps + [0.001] * steps + [0.0001] * steps)
    assert list(history["lr"].iloc[1:]) == pytest.approx([0.01, 0.001, 0.0001])
    assert sum(augmented) == 3 * steps  # every training batch, no evaluation batch, is augmented
    seeds.clear()
    augmented.clear()
    train_run(TrainSpec(**{**SPEC.__dict__, "augment": False}), 5, meta, train, test, tmp_path / "r2", tmp_path / "w2")
    assert seeds == [] and not any(augmented)


def test_the_training_loader_is_iterated_once_per_epoch_in_epoch_order(data, tmp_path, monkeypatch):
    """Epoch e takes FFCV's order e − 1, once. (tqdm.auto calls iter() on what it wraps: wrapped
    around the loader itself it started a second pass, so every epoch took the next epoch's order
    and left a loader thread decoding in the background.)"""
    from ffcv.loader import Loader

    passes = []
    original = Loader.__iter__

    def spy(self):
        passes.append((self.batch_size, self.next_epoch))
        return original(self)

    monkeypatch.setattr(Loader, "__iter__", spy)
    meta, train, test = data
    train_run(SPEC, 0, meta, train, test, tmp_path / "run", tmp_path / "work")
    assert [epoch for size, epoch in passes if size == SPEC.batch_size] == [0, 1, 2]  # evaluation loaders: 512


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_precision_reaches_every_conv_and_linear_in_training_and_evaluation(data, tmp_path, monkeypatch, precision, dtype):
    """Forward hooks record the dtype each conv and linear layer computes in: bf16 under autocast."""
    import convbias.train as train

    seen = {"train": set(), "eval": set()}

    def hooked(*args, **kwargs):
        model = init_model(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.register_forward_hook(lambda mod, i, out: seen["train" if mod.training else "eval"].add(out.dtype))
        return model

    init_model = train.init_model
    monkeypatch.setattr(train, "init_model", hooked)
    spec = TrainSpec(**{**SPEC.__dict__, "epochs": 1, "precision": precision})
    train_run(spec, 0, *data, tmp_path / "run", tmp_path / "work")
    assert seen == {"train": {dtype}, "eval": {dtype}}
    assert all(v.dtype == torch.float32 for v in load_weights(tmp_path / "run" / "epoch001.safetensors").values())


def test_every_loss_and_accuracy_of_the_history_is_that_of_the_weights(idx_dataset, data, tmp_path):
    """With lr 0, no augmentation and no dropout the weights stay those of epoch 0, so every number
    of the history is the cross-entropy and accuracy of the initial model on that split, computed
    here from the IDX files the test wrote (pixels scaled to [-1, 1] by hand)."""
    import gzip

    import numpy as np


    meta, train, test = data
    spec = TrainSpec(**{**SPEC.__dict__, "lr": 0.0, "augment": False, "epochs": 1})
    history = train_run(spec, 4, meta, train, test, tmp_path / "run", tmp_path / "work").set_index("epoch")
    model = init_model(spec, meta, 4).eval()

    def split(prefix, indices=None):
        raw = lambda kind: np.frombuffer(gzip.open(idx_dataset / f"{prefix}-{kind}-ubyte.gz").read(),  # noqa: E731
                                         dtype=np.uint8)
        images, labels = raw("images-idx3")[16:].reshape(-1, 1, 28, 28), raw("labels-idx1")[8:]
        if indices is not None:
            images, labels = images[indices], labels[indices]
        with torch.no_grad():
            out = model((torch.from_numpy(images.astype(np.float32)) - 127.5) / 127.5)
        y = torch.from_numpy(labels.astype(np.int64))
        return torch.nn.functional.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item(), len(y)

    expected = {"train": split("train", meta.train_indices()), "val": split("train", meta.val_indices()),
                "test": split("t10k")}
    for epoch in (0, 1):
        for part in ("val", "test") + (("train",) if epoch else ()):
            loss, acc, n = expected[part]
            assert history.loc[epoch, f"{part}_loss"] == pytest.approx(loss, rel=1e-4), (epoch, part)
            assert abs(history.loc[epoch, f"{part}_acc"] - acc) < 0.5 / n, (epoch, part)
    assert history.loc[1, "lr"] == 0.0 and history.loc[1, "seconds"] > 0
    assert history.loc[1, "images_per_second"] == pytest.approx(expected["train"][2] / history.loc[1, "seconds"])


def test_per_image_train_shuffle_reaches_training_batches_only_with_their_own_indices(data, tmp_path, monkeypatch):
    """Every training batch is transformed with the file indices of its own images (checked by
    comparing its pixels with the file's), evaluation batches without; and the shuffle changes
    what is learnt."""
    from convbias.data.loaders import load_split

    meta, train, test = data
    shuffled = DatasetMeta(**{**meta.__dict__, "train_pixel_shuffle_seed": 1})
    images, _ = load_split(train)
    calls, call = [], BatchTransform.__call__

    def spy(self, x, *args, **kwargs):
        calls.append((x.clone(), kwargs.get("indices")))
        return call(self, x, *args, **kwargs)

    monkeypatch.setattr(BatchTransform, "__call__", spy)
    spec = TrainSpec(**{**SPEC.__dict__, "epochs": 1})
    train_run(spec, 0, shuffled, train, test, tmp_path / "s", tmp_path / "ws")
    trained = [(x, i) for x, i in calls if i is not None]
    assert len(trained) == -(-len(meta.train_indices()) // spec.batch_size)
    assert all(torch.equal(x, images[i]) for x, i in trained)
    assert sorted(torch.cat([i for _, i in trained]).tolist()) == meta.train_indices().tolist()
    evaluated = sum(len(x) for x, i in calls if i is None)
    assert evaluated == 2 * (len(meta.val_indices()) + meta.n_test)  # epochs 0 and 1, validation and test
    calls.clear()
    train_run(spec, 0, meta, train, test, tmp_path / "c", tmp_path / "wc")
    assert all(i is None for _, i in calls)  # a dataset without the shuffle gets no indices
    a, b = load_weights(tmp_path / "s" / "epoch001.safetensors"), load_weights(tmp_path / "c" / "epoch001.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_conv_snapshots_keep_what_stats_and_reinit_read_and_give_their_tables(data, tmp_path):
    """The same run saved under both policies: epochs 1…T−1 of the conv run hold only conv
    tensors (0 and T everything), its weights equal the full run's, and the filter table and the
    re-initialization table computed from either are identical; a conv run resumes exactly."""
    from safetensors import safe_open

    from convbias.jobs import run_filters, run_reinit

    meta, train, test = data
    spec = TrainSpec(**{**SPEC.__dict__, "epochs": 4})
    conv = TrainSpec(**{**spec.__dict__, "snapshots": "conv"})
    train_run(spec, 2, meta, train, test, tmp_path / "full", tmp_path / "w1")
    train_run(conv, 2, meta, train, test, tmp_path / "conv", tmp_path / "w2", stop_after=2)
    train_run(conv, 2, meta, train, test, tmp_path / "conv", tmp_path / "w2")
    layers = RunFolder(tmp_path / "conv").conv_layers()
    conv_keys = {f"{n}.{k}" for n in layers for k in ("weight", "bias")}
    for epoch in range(5):
        full = load_weights(tmp_path / "full" / f"epoch{epoch:03d}.safetensors")
        with safe_open(str(tmp_path / "conv" / f"epoch{epoch:03d}.safetensors"), "pt") as f:
            kept = set(f.keys())
        whole = epoch in (0, 4)
        assert kept == (set(full) if whole else conv_keys), epoch
        assert read_metadata(tmp_path / "conv" / f"epoch{epoch:03d}.safetensors")["contents"] == ("full" if whole else "conv")
        cut = load_weights(tmp_path / "conv" / f"epoch{epoch:03d}.safetensors")
        assert all(torch.equal(cut[k], full[k]) for k in kept), epoch  # resumed after epoch 2: bit-identical
    assert (tmp_path / "w2" / "published.json").exists()
    from convbias.resources import model_size, run_bytes  # what `convbias plan` predicts for both runs' files

    for run, policy in (("full", spec), ("conv", conv)):
        predicted = run_bytes(policy, model_size(policy, meta.shape[2], meta.num_classes, meta.shape[0]))
        written = sum(f.stat().st_size for f in (tmp_path / run).glob("epoch*.safetensors"))
        assert predicted <= written <= predicted + 5 * 2**14, run  # tensors, and a header per file
    for name in ("full", "conv"):
        filters = run_filters(tmp_path / name, 4, False, "e", 2)
        reinit = run_reinit(spec, 2, train.parent / "meta.json", tmp_path / name, test, "e", range(5), device="cpu")
        if name == "full":
            expected_filters, expected_reinit = filters, reinit
    pd.testing.assert_frame_equal(filters, expected_filters)
    pd.testing.assert_frame_equal(reinit, expected_reinit)
    assert set(reinit["source"]) == {"rand", "0", "1", "2", "3", "4"}
    # reinit_epochs: the sweep resets layers to those epochs (and rand) only, with the same accuracies
    chosen = run_reinit(spec, 2, train.parent / "meta.json", tmp_path / "conv", test, "e", [0, 3], device="cpu")
    assert set(chosen["source"]) == {"rand", "0", "3"}
    pd.testing.assert_frame_equal(chosen, reinit[reinit["source"].isin(["rand", "0", "3"])].reset_index(drop=True))


def test_each_seed_trains_in_its_own_batch_order_and_the_same_seed_in_the_same(data, tmp_path, monkeypatch):
    """The order a run reads its training images in is drawn from its seed (and the epoch): recorded
    from the loader each epoch trains on, for seeds 0, 1 and 0 again."""
    import convbias.train as train
    from convbias.data.loaders import batch_indices

    meta, train_file, test = data
    seen, real = [], train.train_epoch

    def recording(forward, optimizer, loader, *args, **kwargs):
        seen[-1].append(torch.cat(batch_indices(loader)))
        return real(forward, optimizer, loader, *args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", recording)
    spec = TrainSpec(**{**SPEC.__dict__, "epochs": 2})
    for i, seed in enumerate((0, 1, 0)):
        seen.append([])
        train_run(spec, seed, meta, train_file, test, tmp_path / f"run{i}", tmp_path / f"work{i}")
    (a1, a2), (b1, b2), (c1, c2) = seen
    assert sorted(a1.tolist()) == sorted(meta.train_indices().tolist())  # every training image once per epoch
    assert not torch.equal(a1, b1) and not torch.equal(a2, b2)  # another seed, another order
    assert not torch.equal(a1, a2)  # another epoch, another order
    assert torch.equal(a1, c1) and torch.equal(a2, c2)  # the same seed, the same order


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


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """A tiny ImageNet-style JPEG dataset (2 classes of 48² images, cropped to 32²), converted."""
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("jpegs")
    folder = make_image_folder(root / "imagenet", classes=2, per_class={"train": 40, "val": 8}, size=48)
    spec = {"source": "imagenet", "path": str(folder), "val_fraction": 0.1, "split_seed": 0, "hflip": True,
            "max_resolution": 48, "jpeg_quality": 90, "compress_probability": 0.0, "image_size": 32}
    meta = convert("imagenet", DatasetSpec.from_config(spec), root / "train.beton", root / "test.beton",
                   root / "meta.json")
    return meta, root / "train.beton", root / "test.beton"


def test_random_resized_crops_are_drawn_from_the_seed_and_epoch_alone(jpegs):
    """FFCV's random resized crop (the 224² path) drew from numba's OS-seeded generators: two
    loaders of one seed — as two invocations of a run — cropped differently.  Now the same seed
    and epoch give the same images, in two decoding threads as in one; another epoch or seed other ones."""
    meta, train, _ = jpegs

    def epoch_images(seed, epoch, workers):
        loader = make_loader(train, 16, meta=meta, indices=meta.train_indices(), train=True, seed=seed, workers=workers)
        loader.next_epoch = epoch
        return torch.cat([x.clone() for x, _ in loader])

    first = epoch_images(3, 1, 2)
    assert torch.equal(first, epoch_images(3, 1, 2)) and torch.equal(first, epoch_images(3, 1, 1))
    assert not torch.equal(first, epoch_images(3, 2, 2)) and not torch.equal(first, epoch_images(4, 1, 2))


def test_a_resumed_run_on_jpegs_equals_an_uninterrupted_one(jpegs, tmp_path):
    """The bit-identical resume of test_resume_is_bit_identical on the JPEG path (random resized crops)."""
    meta, train, test = jpegs
    spec = TrainSpec(model=ModelSpec("lenet", width=0.5, hidden=16, dropout=0.0), epochs=2, batch_size=16, lr=0.01)
    train_run(spec, 1, meta, train, test, tmp_path / "full", tmp_path / "w1", threads=2)
    train_run(spec, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", threads=2, stop_after=1)
    train_run(spec, 1, meta, train, test, tmp_path / "part", tmp_path / "w2", threads=2)
    for e in range(3):
        a = load_weights(tmp_path / "full" / f"epoch{e:03d}.safetensors")
        b = load_weights(tmp_path / "part" / f"epoch{e:03d}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), e


def test_a_run_that_diverges_stops_with_one_sentence_and_is_read_up_to_its_stop(data, tmp_path, capsys):
    """Learning rate 10⁴: the train loss is NaN after the first epoch.  The run stops there with one
    sentence (not 4 epochs of NaN), is published with its epochs so far and says so in its manifest;
    run again it trains nothing; the statistics read its epochs with finite weights, its sweep has no
    rows, `convbias status` names the stop, and claim C0 counts it as a run that did not learn."""
    import math

    from convbias.claims import Evidence, learned_runs
    from convbias.jobs import run_filters, run_reinit
    from convbias.specs import ClaimsSpec
    from convbias.status import run_status

    meta, train, test = data
    spec = TrainSpec(**{**SPEC.__dict__, "lr": 1e4, "epochs": 4})
    out = tmp_path / "runs" / "exp" / "seed0"
    history = train_run(spec, 0, meta, train, test, out, tmp_path / "resume" / "exp" / "seed0")
    said = [line for line in capsys.readouterr().err.splitlines() if "stopped at epoch" in line]
    assert len(said) == 1 and said[0].startswith("exp seed 0 stopped at epoch 1 of 4: its train loss is "), said
    assert said[0].split("its train loss is ")[1].split(" ")[0] in ("nan", "inf"), said
    assert list(history["epoch"]) == [0, 1] and math.isnan(history["train_loss"].iloc[-1])
    run = RunFolder(out)
    assert run.stopped()["epoch"] == 1 and sorted(run.verify()["files"]) == [
        "epoch000.safetensors", "epoch001.safetensors", "history.parquet"]
    train_run(spec, 0, meta, train, test, out, tmp_path / "resume" / "exp" / "seed0")
    assert "nothing left to train" in capsys.readouterr().err
    filters = run_filters(out, spec.epochs, False, "exp", 0)
    assert set(filters["epoch"]) == {0}  # epoch 1's weights are NaN: no directions
    sweep = run_reinit(spec, 0, str(train.with_name("meta.json")), out, test, "exp", [0, 1], device="cpu")
    assert sweep.empty and list(sweep.columns) == ["experiment", "seed", "source", "layer", "name", "accuracy", "drop",
                                                   "final_accuracy"]
    status = run_status("exp", 0, 4, tmp_path / "runs", tmp_path / "resume", num_classes=10, stall_epochs=3)
    assert status["state"] == "done" and status["note"].startswith("stopped at epoch 1: its train loss is ")
    evidence = Evidence(experiment="exp", measure=pd.DataFrame(), history=history.assign(seed=0), reinit=sweep,
                        num_classes=10, channels=1)
    assert not learned_runs(evidence, ClaimsSpec.from_config({})).any()
