"""The convergence flag: the validation curve's gain over the last quarter of training."""

from types import SimpleNamespace

import torch

from vitlab.callbacks.convergence import Convergence, convergence, last_quarter_gain

RISING = [(s, 0.5 + 0.004 * s / 10) for s in range(10, 1001, 10)]  # +0.4 points per 10 steps, to the end
FLAT = [(s, min(0.9, 0.3 + 0.0012 * s)) for s in range(10, 1001, 10)]  # at 0.9 from step 500 on


def test_a_rising_curve_is_still_improving():
    gain = last_quarter_gain(RISING, 1000)
    assert abs(gain - (RISING[-1][1] - RISING[74][1])) < 1e-12  # best after step 750 - best up to it
    record = convergence(RISING, 1000, threshold=0.005)
    assert record["converged"] is False and record["last_quarter_gain"] > 0.09


def test_a_flat_curve_is_converged():
    record = convergence(FLAT, 1000, threshold=0.005)
    assert record["last_quarter_gain"] == 0.0 and record["converged"] is True
    # a late dip does not count as improving: the best before the last quarter stands
    assert convergence([(100, 0.8), (900, 0.7)], 1000, 0.005)["converged"] is True


def test_too_few_validations_say_unknown_not_converged():
    assert convergence([(900, 0.7)], 1000, 0.005)["converged"] is None


def _feed(callback, values):
    for step, value in enumerate(values, 1):
        trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/acc": torch.tensor(value)},
                                  global_step=10 * step, should_stop=False)
        callback.on_validation_end(trainer, None)
        if trainer.should_stop:
            return trainer
    return trainer


def test_early_stopping_on_a_plateau_is_off_by_default_and_recorded_when_on():
    values = [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7]
    off = Convergence()
    assert not _feed(off, values).should_stop and off.summary_values["convergence"]["stopped_early"] is False
    on = Convergence(patience=3)
    trainer = _feed(on, values)
    assert trainer.should_stop and on.stopped_at == 60  # 3 validations after the best at step 30
    record = on.summary_values["convergence"]
    assert record["stopped_early"] and record["stopped_at_step"] == 60 and record["early_stopping"]


def test_a_gain_within_the_validation_sets_noise_is_no_improvement():
    """On 144 validation images one image is 0.69 points: a one-image rise at 95 % is noise."""
    curve = [(100, 0.90), (500, 0.95), (900, 0.95 + 1 / 144)]
    assert convergence(curve, 1000, 0.005)["converged"] is False  # size unknown: the threshold alone
    record = convergence(curve, 1000, 0.005, val_images=144)
    assert abs(record["noise"] - 1.96 * (0.95 * 0.05 / 144) ** 0.5) < 1e-6 and record["converged"] is True
    # ten images' gain stands out of that noise; so does a small gain on a large validation set
    assert convergence([(500, 0.9), (900, 0.9 + 10 / 144)], 1000, 0.005, 144)["converged"] is False
    assert convergence([(500, 0.9), (900, 0.91)], 1000, 0.005, 100_000)["converged"] is False


def test_the_callback_counts_the_validation_images_once_not_in_the_sanity_check():
    callback = Convergence()
    batch = (torch.zeros(32, 1, 8, 8), torch.zeros(32))
    for sanity in (True, False, False):  # a sanity check, then two validations of 3 batches each
        trainer = SimpleNamespace(sanity_checking=sanity, callback_metrics={"val/acc": torch.tensor(0.5)},
                                  global_step=10, should_stop=False, world_size=1)
        for i in range(3):
            callback.on_validation_batch_end(trainer, None, None, batch, i)
        callback.on_validation_end(trainer, None)
    assert callback.val_images == 96 and callback.summary_values["convergence"]["val_images"] == 96
