"""The claims scorecard on small tables whose answer is known by construction."""

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


def history(val_acc: float, test_acc: float | None = None, train_acc: float = 0.95, seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "epoch": e, "val_acc": val_acc if e else 0.1, "train_acc": train_acc if e else 0.1,
                          "test_acc": (val_acc if test_acc is None else test_acc) if e else 0.1}
                         for s in seeds for e in (0, 2)])


def sweep(drops: dict[int, float], seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "source": src, "layer": layer, "drop": d if src == "0" else d / 10}
                         for s in seeds for src in ("rand", "0", "1") for layer, d in drops.items()])


UNBIASED = {layer: 32 for layer in range(1, 7)}
# after training: layer 1 unbiased, layers 2..6 increasingly biased (negatives 44..60 of 64)
TRAINED = {1: 32, 2: 44, 3: 48, 4: 52, 5: 56, 6: 60}


def evidence(negatives=None, val_acc=0.9, reinit=None, channels=3, **kw) -> Evidence:
    return Evidence("e", measure(negatives or {0: UNBIASED, 1: TRAINED, 2: TRAINED}), history(val_acc, **kw),
                    reinit, 10, channels)


def results(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["claim"], table["result"]))


def test_a_network_that_learned_biased_deep_layers_that_are_critical_holds_every_claim():
    critical = sweep({layer: 0.01 * (k - 32) for layer, k in TRAINED.items()})  # drop grows with the bias
    table = scorecard([evidence(reinit=critical)], SPEC)
    assert results(table) == {"C1": "holds", "C2": "holds", "C3": "holds", "C5": "holds", "C6": "holds"}
    row = table.set_index("claim")
    assert row.loc["C2", "value"] == 1.0 and row.loc["C2", "detail"] == "biased layers: 2, 3, 4, 5, 6"
    assert row.loc["C5", "value"] == pytest.approx(1.0) and row.loc["C1", "value"] == 1.0
    assert "C4" not in row.index  # C4 speaks of networks that did not learn


def test_each_claim_fails_when_its_statistic_says_so():
    reversed_drops = sweep({layer: 0.01 * (60 - k) for layer, k in TRAINED.items()})  # the least biased is critical
    biased_init = {0: {**UNBIASED, 3: 58}, 1: {**TRAINED, 1: 60}, 2: {**TRAINED, 1: 60}}
    table = scorecard([evidence(biased_init, reinit=reversed_drops, test_acc=0.85)], SPEC)
    assert results(table) == {"C1": "fails", "C2": "holds", "C3": "fails", "C5": "fails", "C6": "fails"}
    row = table.set_index("claim")
    assert row.loc["C1", "detail"] == "layers outside the band: 3" and row.loc["C5", "value"] < 0
    assert row.loc["C6", "value"] == pytest.approx(0.05)
    few = {0: UNBIASED, 2: {**TRAINED, 2: 34, 3: 33, 4: 31, 5: 30}}  # only layer 6 of 5 deep layers biased
    assert results(scorecard([evidence(few)], SPEC))["C2"] == "fails"


def test_a_network_that_did_not_learn_is_scored_on_c4_only_and_grayscale_has_no_c3():
    flat = {0: UNBIASED, 1: UNBIASED, 2: {**UNBIASED, 4: 40}}  # 40 of 64: p ≈ 0.05, inside the band
    table = scorecard([evidence(flat, val_acc=0.11)], SPEC)
    assert results(table) == {"C1": "holds", "C4": "holds", "C6": "holds"}
    drifted = {0: UNBIASED, 1: UNBIASED, 2: {**UNBIASED, 4: 58}}
    assert results(scorecard([evidence(drifted, val_acc=0.11)], SPEC))["C4"] == "fails"
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
    assert text.splitlines()[-1] == "3 holds, 2 fails, 1 not run" and "C6  fails" in text
