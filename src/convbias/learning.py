"""Did a run learn?  The learning gate of the claims scorecard (C0) and the stall warning of training.

A network that never leaves chance has no bias to measure and no critical layers, so the claims
that presuppose learning are judged only on runs that learned.  What "learned" means is an
experiment's ``expect_learning``:

- ``generalize`` (default): final validation accuracy ≥ ``accuracy_factor`` × chance and final
  train loss < ``loss_fraction`` × ln C (C classes: ln C is the loss of a uniform guess);
- ``memorize`` (fig 6's noisy labels, fig 20's shuffled pixels: clean validation images say
  nothing about fitting them): final train loss < ``loss_fraction`` × ln C;
- ``none`` (fig 15's control, meant to fail): the same test as ``generalize``, expected false.

While training, a run whose train loss has stayed within ``STALL_TOLERANCE`` of ln C (or is not a
number) for ``stall_epochs`` epochs in a row is reported as not learning — it trains on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EXPECTATIONS = ("generalize", "memorize", "none")
STALL_TOLERANCE = 0.03  # "at chance": |train loss − ln C| ≤ 3 % of ln C


def chance_loss(num_classes: int) -> float:
    """The cross-entropy of a uniform guess over ``num_classes`` classes: ln C."""
    return math.log(num_classes)


def learned(train_loss: float, val_acc: float, num_classes: int, expect: str, accuracy_factor: float,
            loss_fraction: float) -> bool:
    """Whether a run whose final epoch has ``train_loss`` and ``val_acc`` learned, as ``expect`` means it."""
    if expect not in EXPECTATIONS:
        raise ValueError(f"unknown expect_learning {expect!r}; known: {', '.join(EXPECTATIONS)}")
    fitted = train_loss < loss_fraction * chance_loss(num_classes)  # False for NaN
    if expect == "memorize":
        return bool(fitted)
    return bool(fitted and val_acc >= accuracy_factor / num_classes)


def at_chance(train_loss: float, num_classes: int, tolerance: float = STALL_TOLERANCE) -> bool:
    """Whether an epoch's train loss is that of a uniform guess (within ``tolerance`` of ln C) or not a number."""
    chance = chance_loss(num_classes)
    return not math.isfinite(train_loss) or abs(train_loss - chance) <= tolerance * chance


def stalled_since(losses: Sequence[tuple[int, float]], num_classes: int, epochs: int) -> int | None:
    """The first epoch of the trailing streak of (epoch, train loss) pairs at chance, when that
    streak is at least ``epochs`` long (``epochs`` 0: never); else None."""
    if epochs < 1:
        return None
    streak = []
    for epoch, loss in losses:
        streak = streak + [epoch] if at_chance(loss, num_classes) else []
    return streak[0] if len(streak) >= epochs else None


def stall_message(history: Sequence[dict], num_classes: int, epochs: int) -> str | None:
    """``not learning — train loss at ln C since epoch e`` for a stalled history (rows with
    ``epoch`` and ``train_loss``; epoch 0, the initialization, has none), else None."""
    losses = [(int(row["epoch"]), float(row["train_loss"])) for row in history if int(row["epoch"]) > 0]
    since = stalled_since(losses, num_classes, epochs)
    if since is None:
        return None
    nan = not math.isfinite(losses[-1][1])
    what = "not a number" if nan else f"at ln {num_classes}"
    return f"not learning — train loss {what} since epoch {since}"
