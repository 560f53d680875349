"""The convergence diagnosis on planted validation curves whose truth is known."""

import numpy as np
import pytest

from vlpeft.convergence import diagnose


def curve(scores, se=1.0, losses=None, every=50):
    """Evaluations at steps 0, every, 2 every, ...; the training loss None at step 0."""
    losses = losses if losses is not None else [3.0 - 0.1 * i for i in range(len(scores))]
    return [{"step": i * every, "val_score": float(v), "val_se": se, "loss": None if i == 0 else float(losses[i])}
            for i, v in enumerate(scores)]


def test_a_curve_still_rising_at_its_end_is_still_improving():
    d = diagnose(curve([30, 40, 50, 58, 64, 69, 73, 76, 79]), window=4)
    assert d.state == "still_improving" and not d.converged
    assert d.best_step == 400 and d.recent == 74.5 and d.earlier == 54  # medians of the last two windows


def test_a_curve_flat_within_its_noise_has_converged():
    d = diagnose(curve([40, 60, 70, 74, 75, 74.5, 75.4, 74.8, 75.2, 74.9, 75.1]), window=4)
    assert d.state == "converged" and d.converged
    assert d.best_step == 300 and d.threshold == 1.0
    slow = diagnose(curve([40, 60, 70, 70.5, 71, 71.4, 71.8, 72.3, 72.7, 73.1, 73.5]), window=4)
    assert slow.state == "still_improving"  # no evaluation beats the one before by 1 SE, the level rises by 2


def test_a_noisy_but_flat_curve_has_converged():
    """A plateau with independent noise of one standard error per evaluation (real evaluations of nearby
    weights on one validation set are correlated, so less noisy than this): one look reads it converged
    at least 85 % of the time, and early stopping, which looks at every evaluation, stops on it within
    three evaluations of the first look 99 % of the time."""
    rng = np.random.default_rng(0)
    one_look = stopped = 0
    for k in range(400):
        scores = [40, 60, 68] + list(70 + rng.normal(0, 1.0, 13))
        one_look += diagnose(curve(scores[:13]), window=4).converged
        stopped += any(diagnose(curve(scores[:n]), window=4).converged for n in range(13, 17))
    assert one_look / 400 >= 0.85 and stopped / 400 >= 0.99, (one_look, stopped)


def test_a_single_late_spike_is_not_a_reason_to_call_a_run_still_improving():
    d = diagnose(curve([40, 60, 70, 70, 70.5, 69.8, 70.2, 70.1, 69.9, 78]), window=4)
    assert d.state == "converged" and d.best_step == 450  # the spike is the best weights, still
    two = diagnose(curve([40, 60, 70, 70, 70.5, 69.8, 70.2, 70.1, 76, 78]), window=4)  # two high ones: a rise
    assert two.state == "still_improving"


def test_flat_at_the_start_while_the_loss_falls_is_not_converged():
    # e.g. a VQA model still answering the majority answer: validation does not move, training does
    scores = [40, 40, 40.3, 39.9, 40, 40.2, 40, 40.1, 39.8]
    d = diagnose(curve(scores, losses=[0, 3.0, 2.8, 2.6, 2.4, 2.2, 2.0, 1.8, 1.6]), window=4)
    assert d.state == "flat_at_start" and not d.converged and d.loss_falling is True
    flat = diagnose(curve(scores, losses=[0] + [2.0] * 8), window=4)
    assert flat.state == "converged"  # nothing moves, the loss neither: more of the same changes nothing


def test_training_that_only_hurts_validation_has_converged_at_step_0():
    d = diagnose(curve([5.0, 4.6, 4.3, 4.2, 4.1], se=0.1, losses=[0, 3.0, 2.5, 2.0, 1.5]), window=2)
    assert d.state == "converged" and d.best_step == 0 and d.best_score == 5.0


def test_too_few_evaluations_cannot_be_judged_and_nothing_trained_is_converged():
    assert diagnose(curve([40, 50, 60, 60, 60, 60, 60, 60]), window=4).state == "too_short"  # 7 after step 0
    assert not diagnose(curve([40, 50, 60]), window=4).converged
    frozen = diagnose(curve([40]), window=4, trained=False)
    assert frozen.state == "not_trained" and frozen.converged


@pytest.mark.parametrize("z,state", [(0.5, "still_improving"), (3.0, "converged")])
def test_the_threshold_is_a_number_of_standard_errors(z, state):
    # the last window's level (median 71.5) beats the one before it (69) by 2.5 SE
    assert diagnose(curve([40, 60, 70, 69, 71.5, 71, 72]), window=3, noise_z=z).state == state


def test_the_plateau_starts_where_the_score_first_came_within_the_noise_of_the_best():
    d = diagnose(curve([20, 60, 68, 70.5, 69.8, 71, 70.2, 70.6, 70.1]), window=4)
    assert d.best_step == 250 and d.plateau_step == 150  # 70.5 at 150 is within 1 SE of 71
