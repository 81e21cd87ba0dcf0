"""The claims scorecard on small tables whose answer is known by construction."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from convbias.claims import Evidence, scorecard, summary
from convbias.specs import ClaimsSpec

F = 64  # filters per layer
SPEC = ClaimsSpec.from_config({})


def measure(negatives: dict[int, dict[int, int]], seeds=(0, 1, 2)) -> pd.DataFrame:
    """A measure table from {epoch: {layer: negative cosines of F}}; p-values by scipy here."""
    return pd.DataFrame([{"experiment": "e", "seed": s, "epoch": e, "layer": layer, "filters": F, "negatives": k,
                          "n_l": k / F, "p_value": binomtest(k, F).pvalue}
                         for s in seeds for e, layers in negatives.items() for layer, k in layers.items()])


def history(val_acc: float, test_acc: float | None = None, train_acc: float = 0.95, seeds=(0, 1, 2),
            train_loss: float | dict = 0.5) -> pd.DataFrame:
    """Epochs 0 and 2 of each seed; ``train_loss`` the final one (a dict: per seed)."""
    final = train_loss if isinstance(train_loss, dict) else dict.fromkeys(seeds, train_loss)
    return pd.DataFrame([{"seed": s, "epoch": e, "val_acc": val_acc if e else 0.1, "train_acc": train_acc if e else 0.1,
                          "test_acc": (val_acc if test_acc is None else test_acc) if e else 0.1,
                          "train_loss": final[s] if e else float("nan")}
                         for s in seeds for e in (2, 0)])  # rows out of epoch order: the last epoch is found


def sweep(drops: dict[int, float], seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": d if src == "0" else d / 10}
                         for s in seeds for src in ("rand", "0", "1") for layer, d in drops.items()])


UNBIASED = {layer: 32 for layer in range(1, 7)}
# after training: layer 1 unbiased, layers 2..6 increasingly biased (negatives 44..60 of 64)
TRAINED = {1: 32, 2: 44, 3: 48, 4: 52, 5: 56, 6: 60}


def evidence(negatives=None, val_acc=0.9, reinit=None, channels=3, expect="generalize", **kw) -> Evidence:
    return Evidence("e", measure(negatives or {0: UNBIASED, 1: TRAINED, 2: TRAINED}), history(val_acc, **kw),
                    reinit, 10, channels, expect)


def results(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["claim"], table["result"]))


def test_a_network_that_learned_biased_deep_layers_that_are_critical_holds_every_claim():
    critical = sweep({layer: 0.01 * (k - 32) for layer, k in TRAINED.items()})  # drop grows with the bias
    table = scorecard([evidence(reinit=critical)], SPEC)
    assert results(table) == {"C0": "holds", "C1": "holds", "C2": "holds", "C3": "holds", "C5": "holds", "C6": "holds"}
    row = table.set_index("claim")
    assert row.loc["C0", "value"] == 1.0 and row.loc["C0", "detail"].startswith("did not learn: none")
    assert row.loc["C2", "value"] == 1.0 and row.loc["C2", "detail"] == "biased layers: 2, 3, 4, 5, 6"
    assert row.loc["C5", "value"] == pytest.approx(1.0) and row.loc["C1", "value"] == 1.0
    assert "C4" not in row.index  # C4 speaks of networks that did not learn


def test_each_claim_fails_when_its_statistic_says_so():
    reversed_drops = sweep({layer: 0.01 * (60 - k) for layer, k in TRAINED.items()})  # the least biased is critical
    biased_init = {0: {**UNBIASED, 3: 58}, 1: {**TRAINED, 1: 60}, 2: {**TRAINED, 1: 60}}
    table = scorecard([evidence(biased_init, reinit=reversed_drops, test_acc=0.85)], SPEC)
    assert results(table) == {"C0": "holds", "C1": "fails", "C2": "holds", "C3": "fails", "C5": "fails", "C6": "fails"}
    row = table.set_index("claim")
    assert row.loc["C1", "detail"] == "layers outside the band: 3" and row.loc["C5", "value"] < 0
    assert row.loc["C6", "value"] == pytest.approx(-0.05)  # test − validation
    few = {0: UNBIASED, 2: {**TRAINED, 2: 34, 3: 33, 4: 31, 5: 30}}  # only layer 6 of 5 deep layers biased
    assert results(scorecard([evidence(few)], SPEC))["C2"] == "fails"


def test_claims_that_presuppose_learning_are_not_applicable_where_a_run_did_not_learn():
    stuck = scorecard([evidence(val_acc=0.11, train_loss=2.30)], SPEC)
    assert results(stuck) == {"C0": "fails", "C1": "holds", "C2": "not applicable", "C3": "not applicable",
                              "C5": "not applicable", "C6": "holds"}
    row = stuck.set_index("claim")
    assert row.loc["C0", "value"] == 0.0 and row.loc["C0", "detail"].startswith("did not learn: 0, 1, 2")
    assert row.loc["C2", "detail"] == "did not learn: runs 0, 1, 2"
    # one run of three stuck at chance (its loss is the test: the mean accuracy is fine)
    one = scorecard([evidence(train_loss={0: 0.5, 1: 2.30, 2: 0.4})], SPEC).set_index("claim")
    assert one.loc["C0", "result"] == "fails" and one.loc["C0", "value"] == pytest.approx(2 / 3)
    assert one.loc["C2", "result"] == "not applicable" and one.loc["C2", "detail"] == "did not learn: runs 1"
    assert "C4" not in one.index  # C4 speaks of networks meant not to learn
    # learned by C0's thresholds from the config: 0.5 is not below 0.1 · ln 10
    strict = ClaimsSpec.from_config({"learned_loss_fraction": 0.1})
    assert results(scorecard([evidence()], strict))["C0"] == "fails"
    assert results(scorecard([evidence(val_acc=0.25)], ClaimsSpec.from_config({"learned_accuracy_factor": 3})))["C0"] == "fails"


def test_memorizing_runs_are_judged_on_their_train_loss_only():
    noisy = scorecard([evidence(val_acc=0.1, test_acc=0.1, expect="memorize")], SPEC)
    assert results(noisy) == {"C0": "holds", "C1": "holds", "C2": "holds", "C3": "holds", "C5": "not run", "C6": "holds"}
    assert "validation" not in noisy.set_index("claim").loc["C0", "statistic"]
    unfitted = scorecard([evidence(val_acc=0.1, expect="memorize", train_loss=2.2)], SPEC)
    assert results(unfitted)["C0"] == "fails" and results(unfitted)["C2"] == "not applicable"


def test_a_control_meant_not_to_learn_inverts_c0_and_is_scored_on_c4_and_grayscale_has_no_c3():
    flat = {0: UNBIASED, 1: UNBIASED, 2: {**UNBIASED, 4: 40}}  # 40 of 64: p ≈ 0.05, inside the band
    table = scorecard([evidence(flat, val_acc=0.11, train_loss=2.30, expect="none")], SPEC)
    assert results(table) == {"C0": "holds", "C1": "holds", "C4": "holds", "C6": "holds"}
    assert table.set_index("claim").loc["C0", "value"] == 1.0  # every run did not learn, as meant
    drifted = {0: UNBIASED, 1: UNBIASED, 2: {**UNBIASED, 4: 58}}
    assert results(scorecard([evidence(drifted, val_acc=0.11, train_loss=2.30, expect="none")], SPEC))["C4"] == "fails"
    learned = scorecard([evidence(flat, train_loss={0: 2.3, 1: 0.5, 2: 2.3}, expect="none")], SPEC).set_index("claim")
    assert learned.loc["C0", "result"] == "fails" and learned.loc["C4", "result"] == "not applicable"
    assert learned.loc["C4", "detail"] == "learned: runs 1"
    gray = scorecard([evidence(channels=1)], SPEC)
    assert "C3" not in set(gray["claim"]) and results(gray)["C5"] == "not run"  # no re-initialization sweep


def test_stated_train_accuracy_and_thresholds_come_from_the_config():
    spec = ClaimsSpec.from_config({"train_accuracy": {"e": 0.57}, "train_accuracy_tolerance": 0.02,
                                   "biased_fraction": 1.0})
    table = scorecard([evidence({0: UNBIASED, 2: {**TRAINED, 2: 34}}, train_acc=0.6)], spec)
    stated = table[table["statistic"].str.startswith("train accuracy")]
    assert list(stated["result"]) == ["fails"] and stated["value"].iloc[0] == pytest.approx(0.6)
    assert results(table)["C2"] == "fails"  # 4 of 5 deep layers biased, 1.0 asked
    text = summary(table)
    assert text.splitlines()[-1] == "4 holds, 2 fails, 0 inconclusive, 1 not run, 0 not applicable"
    assert "C6  fails" in text


def test_c5_needs_a_positive_correlation_at_the_configured_reset_epoch():
    """Drops that fall as the bias grows (ρ = −1, p ≈ 0) fail C5; a reset epoch ≠ 0 ranks by its own drops."""
    falling = sweep({layer: 0.01 * (61 - k) for layer, k in TRAINED.items()})  # the most biased is the least critical
    row = scorecard([evidence(reinit=falling)], SPEC).set_index("claim").loc["C5"]
    assert row["value"] == pytest.approx(-1.0) and float(row["detail"].split()[2]) < 0.05 and row["result"] == "fails"
    # epoch 0's drops fall with the bias, epoch 1's rise with it: the configured epoch decides
    rows = [{"seed": s, "source": src, "layer": layer, "drop": 0.01 * ((61 - k) if src == "0" else (k - 31))}
            for s in (0, 1, 2) for src in ("rand", "0", "1") for layer, k in TRAINED.items()]
    by_epoch = {e: scorecard([evidence(reinit=pd.DataFrame(rows))], ClaimsSpec.from_config({"reset_epoch": e}))
                for e in (0, 1)}
    assert [results(by_epoch[e])["C5"] for e in (0, 1)] == ["fails", "holds"]
    assert "reset to epoch 1" in by_epoch[1].set_index("claim").loc["C5", "statistic"]


def test_c1_and_c2_look_at_every_seed_not_only_the_first():
    """Seed 2 alone has layer 3 outside the band at initialization: C1 fails (and C2 holds: every seed
    ends with biased deep layers); when only seed 0 has them C2 is inconclusive, when none: fails."""
    clean, bad_init = measure({0: UNBIASED, 2: TRAINED}, seeds=(0, 1)), measure({0: {**UNBIASED, 3: 58}, 2: TRAINED}, seeds=(2,))
    table = scorecard([Evidence("e", pd.concat([clean, bad_init]), history(0.9), None, 10, 3)], SPEC)
    assert results(table)["C1"] == "fails" and table.set_index("claim").loc["C1", "detail"] == "layers outside the band: 3"
    assert results(table)["C2"] == "holds"
    first_only = pd.concat([measure({0: UNBIASED, 2: TRAINED}, seeds=(0,)), measure({0: UNBIASED, 2: UNBIASED}, seeds=(1, 2))])
    row = scorecard([Evidence("e", first_only, history(0.9), None, 10, 3)], SPEC).set_index("claim").loc["C2"]
    # most runs say no layer is biased (0.0), but the resample of runs {0, 0, 0} says all are: the
    # interval over runs [0, 1] holds both, so 3 runs cannot tell; with no run biased, C2 fails
    assert (row["value"], row["low"], row["high"], row["result"]) == (0.0, 0.0, 1.0, "inconclusive")
    assert row["per_run"] == "0: 1; 1: 0; 2: 0" and "[0, 1] holds 0.5" in row["detail"]
    none = measure({0: UNBIASED, 2: UNBIASED})
    assert results(scorecard([Evidence("e", none, history(0.9), None, 10, 3)], SPEC))["C2"] == "fails"


def test_c0_judges_each_run_on_its_final_epoch_not_on_its_best_one():
    """Seed 1 learned by epoch 2 and was back at chance at its last epoch (3); seeds 3 and 4 end
    with only one of the two at chance (validation accuracy, train loss); seed 2 stayed at chance
    until its last epoch learned: seeds 1, 3 and 4 did not learn, seed 2 did (maxima of the
    validation accuracy, or minima of the train loss, over the epochs would say all learned)."""
    from convbias.claims import learned_runs

    nan = float("nan")
    curves = {0: [(0.1, nan), (0.5, 1.5), (0.8, 0.6), (0.9, 0.4)],  # learned, and stayed so
              1: [(0.1, nan), (0.5, 1.5), (0.9, 0.3), (0.1, 2.30)],  # learned, then fell back to chance
              2: [(0.1, nan), (0.1, 2.30), (0.1, 2.30), (0.8, 0.5)],  # learned only at the end
              3: [(0.1, nan), (0.9, 0.3), (0.1, 0.3)],  # validation accuracy back at chance
              4: [(0.1, nan), (0.9, 0.3), (0.9, 2.30)]}  # train loss back at ln 10
    rows = [{"seed": s, "epoch": e, "val_acc": acc, "train_acc": acc, "test_acc": acc, "train_loss": loss}
            for s, curve in curves.items() for e, (acc, loss) in reversed(list(enumerate(curve)))]
    ev = Evidence("e", measure({0: UNBIASED, 3: TRAINED}), pd.DataFrame(rows), None, 10, 3)
    assert learned_runs(ev, SPEC).to_dict() == {0: True, 1: False, 2: True, 3: False, 4: False}
    row = scorecard([ev], SPEC).set_index("claim")
    assert row.loc["C0", "result"] == "fails" and row.loc["C0", "value"] == pytest.approx(2 / 5)
    assert row.loc["C0", "detail"].startswith("did not learn: 1, 3, 4;") and "1: 2.3, 2: 0.5" in row.loc["C0", "detail"]
    assert row.loc["C2", "result"] == "not applicable" and row.loc["C2", "detail"] == "did not learn: runs 1, 3, 4"
    # a control meant not to learn, whose run 1 learned in the middle and ended at chance: none learned
    control = Evidence("e", ev.measure, ev.history[ev.history["seed"] == 1], None, 10, 3, expect_learning="none")
    assert results(scorecard([control], SPEC))["C0"] == "holds"


def layered(negatives: dict[int, tuple[int, int]], seeds=(0, 1, 2)) -> pd.DataFrame:
    """A measure table of epochs 0 (every layer at F/2) and 2 from {layer: (filters, negatives)}."""
    return pd.DataFrame([{"experiment": "e", "seed": s, "epoch": e, "layer": layer, "filters": f, "zero_norm": 0,
                          "negatives": k if e else f // 2, "n_l": (k if e else f // 2) / f,
                          "p_value": binomtest(k if e else f // 2, f).pvalue}
                         for s in seeds for e in (0, 2) for layer, (f, k) in negatives.items()])


def test_c5_ranks_bias_in_no_bias_units_so_narrow_layers_do_not_look_biased():
    """Six unbiased layers of 8 to 256 filters, each as far from F/2 as no bias typically puts it
    (|n_l - 1/2| falls with width, 0.125 to 0.02), and drops that fall with depth: the earlier
    statistic (|n_l - 1/2|) ranks them as "biased = critical" (rho 0.99); C5, on q, does not hold."""
    filters = [8, 16, 32, 64, 128, 256]
    layers = {i + 1: (f, f // 2 + round(0.34 * f ** 0.5)) for i, f in enumerate(filters)}
    drops = sweep({layer: d for layer, d in zip(layers, [0.4, 0.3, 0.2, 0.1, 0.05, 0.02])})
    ev = Evidence("e", layered(layers), history(0.9), drops, 10, 1)
    row = scorecard([ev], SPEC).set_index("claim").loc["C5"]
    assert row["result"] == "fails" and row["value"] < 0.5 and row["high"] < 0.5
    old_rho = float(row["detail"].rsplit("rho ", 1)[1])
    assert old_rho > 0.9  # what the earlier scorecard read as C5 holding (p < 0.05)


def test_c5_needs_every_resample_of_runs_and_more_than_one_run():
    """Seeds 0 and 1 have drops rising with the bias, seed 2 falling: the layer means still rank
    together (rho 1), but the resample {2, 2, 2} gives -1, so the interval holds both no effect and
    the paper's rho: inconclusive, with each run's own rho; one run alone is inconclusive too."""
    rows = [{"seed": s, "source": src, "layer": layer, "drop": 0.01 * ((k - 31) if s < 2 else 0.5 * (61 - k))}
            for s in (0, 1, 2) for src in ("rand", "0") for layer, k in TRAINED.items()]
    row = scorecard([evidence(reinit=pd.DataFrame(rows))], SPEC).set_index("claim").loc["C5"]
    assert row["value"] == pytest.approx(1.0) and (row["low"], row["high"]) == (pytest.approx(-1.0), pytest.approx(1.0))
    assert row["result"] == "inconclusive" and "holds both no effect (0) and the paper's rho (0.5)" in row["detail"]
    assert row["per_run"] == "0: 1; 1: 1; 2: -1"
    single = Evidence("e", measure({0: UNBIASED, 2: TRAINED}, seeds=(0,)), history(0.9, seeds=(0,)),
                      sweep({layer: 0.01 * (k - 32) for layer, k in TRAINED.items()}, seeds=(0,)), 10, 3)
    row = scorecard([single], SPEC).set_index("claim").loc["C5"]
    assert row["value"] == pytest.approx(1.0) and row["result"] == "inconclusive" and "1 run" in row["detail"]


def test_layers_too_narrow_for_the_binomial_test_make_c2_and_c3_inconclusive_not_failed():
    """VGG-like widths at 1/8: layers of 8 and 16 filters find n_l = 0.7 in 6 % and 10 % of runs.
    Deep layers 5, 6 biased, 2-4 (narrow) not: 2 of 5 is below half, but counting the narrow ones
    it could be 5 of 5: inconclusive, naming them. With four more wide unbiased layers even the
    narrow ones cannot lift it to half: fails. Layer 1 of 8 filters cannot be told biased: C3 too."""
    narrow = {1: (8, 4), 2: (8, 4), 3: (16, 8), 4: (16, 8), 5: (64, 50), 6: (64, 52)}
    row = scorecard([Evidence("e", layered(narrow), history(0.9), None, 10, 3)], SPEC).set_index("claim")
    assert row.loc["C2", "value"] == pytest.approx(0.4) and row.loc["C2", "result"] == "inconclusive"
    assert "layers 2, 3, 4 are too narrow to tell" in row.loc["C2", "detail"]
    assert row.loc["C3", "result"] == "inconclusive" and "layer 1 is too narrow" in row.loc["C3", "detail"]
    wide_unbiased = {**narrow, **{layer: (64, 32) for layer in range(7, 13)}}
    table = scorecard([Evidence("e", layered(wide_unbiased), history(0.9), None, 10, 3)], SPEC)
    assert results(table)["C2"] == "fails"  # at most 3 + 2 of 11 deep layers, even if the narrow ones were biased


def runs_history(val: list[float], test: list[float], train_acc: list[float] | None = None) -> pd.DataFrame:
    """Epochs 0 and 1 of one run per entry, with these final validation and test accuracies."""
    train_acc = train_acc or [0.95] * len(val)
    return pd.DataFrame([{"seed": s, "epoch": e, "val_acc": v if e else 0.1, "test_acc": t if e else 0.1,
                          "train_acc": a if e else 0.1, "train_loss": 0.5 if e else float("nan")}
                         for s, (v, t, a) in enumerate(zip(val, test, train_acc)) for e in (0, 1)])


def test_c6_asks_the_interval_over_runs_to_lie_inside_the_gap_and_a_split_precise_enough():
    def c6(val, test, val_images=None, **kw):
        ev = Evidence("e", measure({0: UNBIASED, 1: TRAINED}), runs_history(val, test, **kw), None, 10, 3,
                      val_images=val_images)
        return scorecard([ev], ClaimsSpec.from_config({"train_accuracy": {"e": 0.9}})).query("claim == 'C6'")

    gap = c6([0.90, 0.91, 0.92], [0.902, 0.914, 0.923]).iloc[0]  # gaps 0.002, 0.004, 0.003
    assert gap["result"] == "holds" and gap["value"] == pytest.approx(0.003)
    assert (gap["low"], gap["high"]) == (pytest.approx(0.002), pytest.approx(0.004))
    assert c6([0.90, 0.91, 0.92], [0.92, 0.94, 0.945]).iloc[0]["result"] == "fails"  # gaps 0.02-0.03
    mixed = c6([0.90, 0.91, 0.92], [0.90, 0.93, 0.915]).iloc[0]  # gaps 0, 0.02, -0.005: mean 0.005
    assert mixed["result"] == "inconclusive" and "reaches past 0 ± 0.01" in mixed["detail"]
    noisy = c6([0.90, 0.91, 0.92], [0.902, 0.914, 0.923], val_images=1000).iloc[0]  # standard error 0.009
    assert noisy["result"] == "holds"
    noisy = c6([0.90, 0.91, 0.92], [0.902, 0.914, 0.923], val_images=500).iloc[0]  # standard error 0.013
    assert noisy["result"] == "inconclusive" and "500 images" in noisy["detail"] and "0.013" in noisy["detail"]
    stated = c6([0.9, 0.9, 0.9], [0.9, 0.9, 0.9], train_acc=[0.80, 0.90, 0.99]).iloc[1]  # paper: 0.9 ± 0.05
    assert stated["result"] == "inconclusive" and stated["low"] < 0.85 < 0.95 < stated["high"]
    assert c6([0.9] * 3, [0.9] * 3, train_acc=[0.94, 0.92, 0.93]).iloc[1]["result"] == "holds"
    assert c6([0.9] * 3, [0.9] * 3, train_acc=[0.70, 0.72, 0.71]).iloc[1]["result"] == "fails"


def test_the_bootstrap_over_runs_is_exact_and_spearman_is_scipys():
    from itertools import product

    from scipy.stats import spearmanr

    from convbias.verdicts import mean_interval, quantiles, resamples, spearman

    weights, probability = resamples(3)
    assert weights.shape == (10, 3) and probability.sum() == pytest.approx(1.0)
    # the 27 ordered resamples of 3 runs, as a distribution of their mean
    values = np.array([0.0, 1.0, 5.0])
    means = sorted(values[list(draw)].mean() for draw in product(range(3), repeat=3))
    low, high = quantiles(weights @ values, probability, 0.95)
    assert (low, high) == pytest.approx((means[0], means[-1]))  # 1/27 > 2.5 %: the extremes, single-run resamples
    assert mean_interval(values, 0.5) == pytest.approx((means[7 - 1], means[27 - 7]))  # the 7th from each end
    assert resamples(12)[0].shape == (4000, 12)  # too many multisets: seeded draws
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, size=(5, 9)).astype(float), rng.normal(size=(5, 9))  # ties in x
    rho, p = spearman(x, y)
    for i in range(5):
        expected = spearmanr(x[i], y[i])
        assert rho[i] == pytest.approx(expected.statistic) and p[i] == pytest.approx(expected.pvalue)


def test_the_scorecard_has_intervals_per_run_values_and_a_sentence_per_claim():
    from convbias.claims import COLUMNS, findings, per_run_values

    critical = sweep({layer: 0.01 * (k - 32) for layer, k in TRAINED.items()})
    table = scorecard([evidence(reinit=critical)], SPEC)
    assert list(table.columns) == COLUMNS and {"low", "high", "per_run"} <= set(COLUMNS)
    c5 = table.set_index("claim").loc["C5"]
    assert per_run_values(c5["per_run"]).to_dict() == {0: 1.0, 1: 1.0, 2: 1.0}
    said = findings(table)
    assert [s.split(",")[0] for s in said] == ["C0", "C1", "C2", "C3", "C5", "C6"]
    assert said[4].startswith("C5, biased layers are the critical ones: holds for e (1, over runs 1 to 1)")
