import pickle

import pandas as pd
import pytest
import torch

from convbias.checkpoints import save_weights
from convbias.cli import main


def test_stats_of_a_state_dict_with_wrapper_prefix(tmp_path, capsys):
    torch.manual_seed(0)
    state = {"module.features.0.weight": -torch.rand(8, 3, 3, 3), "module.features.0.bias": torch.zeros(8),
             "module.features.2.weight": torch.rand(4, 8, 3, 3), "module.fc.weight": torch.rand(10, 4)}
    torch.save(state, tmp_path / "w.pt")
    assert main(["stats", str(tmp_path / "w.pt"), "--output", str(tmp_path / "t.csv")]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["name"]) == ["features.0", "features.2"]
    assert list(table["n_l"]) == [1.0, 0.0]
    assert list(table["kernel"]) == ["3x3x3", "8x3x3"]
    assert (tmp_path / "t.csv").read_bytes().isascii()
    assert "features.0" in capsys.readouterr().out


def test_stats_of_our_checkpoint_uses_stored_order(tmp_path):
    state = {f"features.{i}.weight": torch.randn(2, 1, 3, 3) for i in (0, 2)}
    save_weights(tmp_path / "e.safetensors", state, conv_layers=["features.2", "features.0"])
    assert main(["stats", str(tmp_path / "e.safetensors"), "--output", str(tmp_path / "t.parquet")]) == 0
    assert list(pd.read_parquet(tmp_path / "t.parquet")["name"]) == ["features.2", "features.0"]


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("content", [b"hello, not weights", pickle.dumps({"w": Payload()})], ids=["text", "pickled-code"])
def test_stats_refuses_non_weights_and_pickled_code(tmp_path, capsys, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    assert main(["stats", str(path)]) == 2
    captured = capsys.readouterr()
    assert "bad.pt" in captured.err and "code ran" not in captured.out


def test_stats_of_torchvision_weights_from_torch_home(tmp_path, monkeypatch, capsys):
    """torchvision:NAME reads the file torchvision caches under TORCH_HOME; never downloads unasked."""
    from torchvision import models

    from convbias.pretrained import weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["stats", "torchvision:alexnet"]) == 2
    err = capsys.readouterr().err
    path, url = weights_file("alexnet")
    assert str(path.parent) in err and path.name in err and url in err and "\n" not in err.strip()
    assert "convbias stats --download" in err  # the fix names the flag
    # the file, made here with torchvision's own AlexNet (random weights) in the published format
    torch.manual_seed(0)
    path.parent.mkdir(parents=True)
    torch.save(models.alexnet(weights=None).state_dict(), path)
    assert main(["stats", "torchvision:alexnet", "--output", str(tmp_path / "t.csv"),
                 "--histograms", str(tmp_path / "h.pdf")]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["name"]) == ["features.0", "features.3", "features.6", "features.8", "features.10"]
    assert list(table["layer"]) == [1, 2, 3, 4, 5]
    assert (tmp_path / "h.pdf").stat().st_size > 0
    assert main(["stats", "torchvision:no_such_net"]) == 2
    assert "no_such_net" in capsys.readouterr().err


def test_stats_strips_torch_compile_prefix(tmp_path):
    state = {"_orig_mod.conv.weight": torch.rand(4, 3, 3, 3)}
    torch.save(state, tmp_path / "w.pt")
    assert main(["stats", str(tmp_path / "w.pt"), "--output", str(tmp_path / "t.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "t.csv")["name"]) == ["conv"]


def test_stats_of_a_conv_snapshot_equal_those_of_the_full_state(tmp_path):
    """Under `snapshots: conv` an epoch keeps only its conv tensors: the same table."""
    from convbias.models import build_model, conv_layers
    from convbias.specs import ModelSpec

    torch.manual_seed(3)
    model = build_model(ModelSpec("vgg11", width=0.125), 3, 10, 32)
    names = [n for n, _ in conv_layers(model)]
    full = model.state_dict()
    conv = {k: v for k, v in full.items() if k.rsplit(".", 1)[0] in names}
    assert len(conv) < len(full)
    for name, state in (("full", full), ("conv", conv)):
        save_weights(tmp_path / f"{name}.safetensors", state, conv_layers=names, contents=name)
        assert main(["stats", str(tmp_path / f"{name}.safetensors"), "--output", str(tmp_path / f"{name}.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "conv.csv"), pd.read_csv(tmp_path / "full.csv"))
    assert len(pd.read_csv(tmp_path / "conv.csv")) == len(names)


def test_stats_says_what_is_wrong_with_folders_layerless_files_nan_weights_and_missing_output_folders(tmp_path, capsys):
    save_weights(tmp_path / "linear.safetensors", {"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)})
    assert main(["stats", str(tmp_path / "linear.safetensors")]) == 2
    assert "has no conv layers (4-d weights with kernels larger than 1×1" in capsys.readouterr().err
    assert main(["stats", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder; give one weights file in it" in capsys.readouterr().err
    weight = torch.randn(4, 2, 3, 3)
    weight[1, 0, 0, 0] = float("nan")
    weight[2, 1, 2, 2] = float("inf")
    save_weights(tmp_path / "nan.safetensors", {"features.0.weight": weight})
    assert main(["stats", str(tmp_path / "nan.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "layer features.0 has 2 NaN or infinite weights" in err and "nan.safetensors" in err
    good = tmp_path / "good.safetensors"
    save_weights(good, {"features.0.weight": torch.randn(4, 2, 3, 3)})
    for option in ("--output", "--histograms"):
        assert main(["stats", str(good), option, str(tmp_path / "missing" / "t.csv")]) == 2
        captured = capsys.readouterr()
        assert f"the folder of {option}" in captured.err and "does not exist" in captured.err
        assert captured.out == ""  # stopped before printing anything
    zero = torch.randn(4, 2, 3, 3)
    zero[0] = 0  # a zero filter is still counted apart, not refused
    save_weights(tmp_path / "zero.safetensors", {"features.0.weight": zero})
    assert main(["stats", str(tmp_path / "zero.safetensors"), "--output", str(tmp_path / "z.csv")]) == 0
    assert pd.read_csv(tmp_path / "z.csv")["zero_norm"].tolist() == [1]


def test_version_and_plain_text_help(capsys):
    import convbias

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"convbias {convbias.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and "stats" in out and "status" in out and "verify" in out


def test_stats_with_init_adds_each_layers_relative_distance_and_refuses_another_network(tmp_path, capsys):
    torch.manual_seed(1)
    start = {"features.0.weight": torch.randn(8, 3, 3, 3), "features.2.weight": torch.randn(4, 8, 3, 3)}
    moved = {"features.0.weight": start["features.0.weight"] * 1.5,  # moved by half its norm
             "features.2.weight": start["features.2.weight"].clone()}  # not at all
    moved["features.2.weight"][0] += 1.0
    for name, state in (("w0", start), ("wt", moved)):
        save_weights(tmp_path / f"{name}.safetensors", state)
    assert main(["stats", str(tmp_path / "wt.safetensors"), "--init", str(tmp_path / "w0.safetensors"),
                 "--output", str(tmp_path / "t.csv")]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    w0 = start["features.2.weight"].double()
    # the weights are float32: the distances are exact to its precision
    assert table["distance"].tolist() == pytest.approx([0.5, (1.0 * 8 * 9) ** 0.5 / w0.norm().item()], rel=1e-6)
    other = {"features.0.weight": torch.randn(8, 1, 3, 3)}
    save_weights(tmp_path / "other.safetensors", other)
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "wt.safetensors"), "--init", str(tmp_path / "other.safetensors")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"convbias stats: --init {tmp_path / 'other.safetensors'} has it as (8, 1, 3, 3), not features.0.weight of "
        "shape (8, 3, 3, 3): give the weights of the same network")


def test_verify_of_a_mistyped_path_says_it_is_not_a_folder_not_that_a_run_is_damaged(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convbias verify: {tmp_path / 'nope'} is not a folder: give run folders") and "DAMAGED" not in err


def test_plan_and_status_name_the_fix_for_an_unknown_target_and_a_missing_config(capsys):
    """fig99: the figure names a user types (fig1 … fig24) and the close ones; a config that is not
    there: one sentence, not a raw [Errno 2]."""
    assert main(["plan", "fig99"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'fig99': did you mean fig9" in err and "fig1, fig2, fig4 … fig24 (the paper's, 23 in all)" in err, err
    assert main(["status", "--config", "nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("convbias status: cannot read the config nope.yaml (No such file or directory): run it from "
                           "the repository's root, or give the study's config with --config FILE")


def test_plan_of_the_quickstart_says_its_wall_time_and_what_each_column_means(capsys):
    assert main(["plan", "quickstart", "--runs", "nowhere", "--benchmarks", "nowhere", "--cores", "2"]) == 0
    out = capsys.readouterr().out
    assert "quickstart on 2 CPU cores (snakemake --cores 2): ≈ " in out
    for column in ("job_min", "sweep_min", "filters_min", "train_gpu_gb", "disk_gb", "hours"):
        assert f"{column} = " in out or f", {column} = " in out or f"{column}, " in out, column


def test_claims_scores_an_evidence_folder_again_with_the_configs_thresholds(tmp_path, capsys):
    """`convbias claims FOLDER` reads what a claims job wrote (convbias.evidence) and prints the same
    scorecard; the thresholds are the config's claims section (here a stricter C0), and a folder
    that is not one says which file is missing."""
    from convbias.claims import scorecard
    from convbias.evidence import read_evidence, write_evidence
    from convbias.specs import ClaimsSpec
    from test_claims import TRAINED, evidence, sweep

    original = [evidence(reinit=sweep({layer: 0.01 * (k - 32) for layer, k in TRAINED.items()})),
                evidence(channels=1)]  # no sweep: no reinit table
    original[1] = type(original[1])(**{**original[1].__dict__, "experiment": "f", "val_images": 1200})
    write_evidence(original, tmp_path / "ev")
    back = read_evidence(tmp_path / "ev")
    assert [(e.experiment, e.channels, e.val_images, e.reinit is None) for e in back] == [
        ("e", 3, None, False), ("f", 1, 1200, True)]
    expected = scorecard(original, ClaimsSpec.from_config({"learned_loss_fraction": 0.1}))
    (tmp_path / "config.yaml").write_text("claims:\n  learned_loss_fraction: 0.1\n  train_accuracy: {other: 0.5}\n")
    assert main(["claims", str(tmp_path / "ev"), "--config", str(tmp_path / "config.yaml"),
                 "--output", str(tmp_path / "claims.csv")]) == 0
    out = capsys.readouterr().out
    written = pd.read_csv(tmp_path / "claims.csv", keep_default_na=False, na_values=[""])
    assert list(written["result"]) == list(expected["result"]) and "C0, every run learned" in out
    # C0 fails both (train loss 0.5 is not below 0.1 ln 10): C2, C3, C5 and C2, C5 do not apply; C1, C6 hold
    assert out.rstrip().splitlines()[-1] == "4 holds, 2 fails, 0 inconclusive, 0 not run, 5 not applicable"
    assert main(["claims", str(tmp_path / "nothing")]) == 2
    assert "experiments.json does not exist" in capsys.readouterr().err
