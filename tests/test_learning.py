"""The learning gate (C0's test) and the stall warning, on numbers whose answer is known."""

import math
from pathlib import Path

import pytest

from convbias.learning import at_chance, chance_loss, learned, stall_message, stalled_since

LN10 = math.log(10)


def test_chance_loss_is_the_cross_entropy_of_a_uniform_guess():
    import torch

    for classes in (2, 10, 1000):
        uniform = torch.nn.functional.cross_entropy(torch.zeros(1, classes), torch.tensor([0])).item()
        assert chance_loss(classes) == pytest.approx(uniform)


@pytest.mark.parametrize("loss,acc,expect,result", [
    (1.0, 0.25, "generalize", True),            # both tests pass
    (1.0, 0.19, "generalize", False),           # accuracy below 2 × chance
    (0.8 * LN10 + 1e-9, 0.9, "generalize", False),  # loss not below 0.8 ln C
    (0.8 * LN10 - 1e-9, 0.2, "generalize", True),   # accuracy exactly 2 × chance counts
    (float("nan"), 0.9, "generalize", False),   # a diverged run did not learn
    (0.1, 0.10, "memorize", True),              # fitted random labels: validation says nothing
    (2.2, 0.90, "memorize", False),
    (1.0, 0.25, "none", True),                  # for a control, the generalize test (expected false)
])
def test_learned_as_each_expectation_means_it(loss, acc, expect, result):
    assert learned(loss, acc, 10, expect, accuracy_factor=2.0, loss_fraction=0.8) is result


def test_learned_rejects_an_unknown_expectation():
    with pytest.raises(ValueError, match="unknown expect_learning 'yes'"):
        learned(1.0, 0.5, 10, "yes", 2.0, 0.8)


def test_at_chance_is_within_three_percent_of_ln_c_on_either_side_or_not_a_number():
    assert at_chance(LN10, 10) and at_chance(LN10 * 1.029, 10) and at_chance(LN10 * 0.971, 10)
    assert not at_chance(LN10 * 1.04, 10) and not at_chance(LN10 * 0.95, 10)
    assert at_chance(float("nan"), 10) and at_chance(float("inf"), 10)
    assert at_chance(math.log(100), 100) and not at_chance(LN10, 100)


def test_a_stall_is_a_trailing_streak_of_epochs_at_chance_at_least_k_long():
    flat = [(1, 2.30), (2, 2.31), (3, 2.29)]
    assert stalled_since(flat, 10, 3) == 1
    assert stalled_since(flat, 10, 4) is None  # not yet K epochs
    assert stalled_since(flat, 10, 0) is None  # K = 0: never
    recovered = [(1, 2.30), (2, 2.31), (3, 1.90)]
    assert stalled_since(recovered, 10, 1) is None  # the last epoch left chance
    relapsed = [(1, 2.30), (2, 1.50), (3, 2.30), (4, 2.30)]
    assert stalled_since(relapsed, 10, 2) == 3  # the streak starts after the last epoch off chance
    assert stalled_since(relapsed, 10, 3) is None


def test_the_stall_message_names_ln_c_and_the_first_epoch_of_the_streak():
    history = [{"epoch": 0, "train_loss": float("nan")}] + [{"epoch": e, "train_loss": 2.3026} for e in (1, 2, 3)]
    assert stall_message(history, 10, 3) == "not learning — train loss at ln 10 since epoch 1"
    assert stall_message(history, 10, 4) is None  # epoch 0 (no train loss) is not an epoch at chance
    learning = history[:2] + [{"epoch": 2, "train_loss": 1.2}]
    assert stall_message(learning, 10, 1) is None
    diverged = history[:1] + [{"epoch": 1, "train_loss": 2.30}, {"epoch": 2, "train_loss": float("nan")}]
    assert stall_message(diverged, 10, 2) == "not learning — train loss not a number since epoch 1"


def test_a_run_meant_not_to_learn_never_warns_and_the_study_says_which_runs_are_meant_so():
    import yaml

    from convbias.config import load_config
    from convbias.specs import ExperimentSpec

    entry = {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 3}
    assert ExperimentSpec.from_config(entry).warn_after() == 3  # the schema's default
    assert ExperimentSpec.from_config({**entry, "stall_epochs": 5}).warn_after() == 5
    assert ExperimentSpec.from_config({**entry, "stall_epochs": 5, "expect_learning": "none"}).warn_after() == 0
    study = load_config(yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text()))
    expect = {name: exp.expect_learning for name, exp in study.experiments.items() if exp.expect_learning != "generalize"}
    assert expect == {"quickstart_vgg11_control": "none", "vgg19_imagenet_normal_init": "none",
                      "vgg19_cifar10_noisy_labels": "memorize", "vgg19_cifar10_shuffled_pixels": "memorize"}
