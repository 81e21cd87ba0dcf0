"""The training loop: what it writes every epoch, that it learns, and that every loss, accuracy,
augmentation, learning rate, sample order and precision is the one it should be."""

import numpy as np
import pandas as pd
import pytest
import torch

from convbias.checkpoints import load_weights, read_metadata
from convbias.data.dataset import DatasetMeta
from convbias.data.loaders import make_loader
from convbias.data.transform import BatchTransform
from convbias.models import conv_layers, init_model
from convbias.runs import RunFolder
from convbias.specs import ModelSpec, TrainSpec
from convbias.train import HISTORY_COLUMNS, evaluate, train_run
from train_common import DROPOUT, SPEC, data  # noqa: F401 (fixtures)


def test_training_writes_every_epoch_and_learns(data, tmp_path, capsys):
    meta, train, test = data
    history = train_run(SPEC, 0, meta, train, test, tmp_path / "run", tmp_path / "work", stall_epochs=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if " epoch " in line]
    assert len(lines) == 3 and not any("not learning" in line for line in lines)  # it learns: no warning
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [f"epoch{e:03d}.safetensors" for e in range(4)] + ["history.parquet", "manifest.json"]
    assert (tmp_path / "work" / "published.json").exists()  # until the workflow drops it (test_manifests.py)
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


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"compile": True}, {"compile": "reduce-overhead"}],
                         ids=["bf16", "compile", "reduce-overhead"])
def test_bf16_and_compile_options_train(data, tmp_path, options, monkeypatch):
    meta, train, test = data
    spec = TrainSpec(**{**SPEC.__dict__, "epochs": 1, **options})
    # the options reach torch.compile as they are; the module it returns (dynamo's wrapper, with
    # its "_orig_mod." names) is what trains and is saved — compiled by dynamo's "eager" backend, as
    # inductor's C++ compile (about 45 CPU-s on a fresh machine) tests torch, not convbias
    compiled, compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(kw) or compile(model, backend="eager"))
    history = train_run(spec, 0, meta, train, test, tmp_path / "run", tmp_path / "work")
    assert compiled == ([] if not spec.compile else [{"mode": "reduce-overhead"}] if spec.compile == "reduce-overhead"
                        else [{}])
    assert history["train_loss"].notna().iloc[1:].all()
    weights = load_weights(tmp_path / "run" / "epoch001.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert not torch.equal(weights["features.0.weight"], load_weights(tmp_path / "run" / "epoch000.safetensors")["features.0.weight"])


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
