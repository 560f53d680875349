"""Has a run stopped learning? The diagnosis of one run's validation curve, shared by the training
loop (early stopping: `diagnose(...).converged` is its stopping rule) and by the analysis (a verdict
built on runs that were still learning measures the training length, not the data or the method).
No torch here: the analysis reads it.

A curve is the run's evaluations in order, step 0 (the model before any training) first: each a
validation score v_i, its standard error s_i (the score's own noise: the binomial standard error
of VQA accuracy, a bootstrap over images for CIDEr-D; `tasks.metrics`) and the mean training loss
since the previous evaluation. With a window of w evaluations (the run's `patience`) and an
improvement threshold t = z * s (s the standard error at the best evaluation so far, z `noise_z`):

    recent   = median(v_{k-w+1} .. v_k)        the level of the last w evaluations
    previous = median(v_{k-2w+1} .. v_{k-w})   the level of the w before them

Medians, so that one lucky (or unlucky) evaluation moves neither level; two whole windows, so that
a slow rise that no single evaluation shows above the noise still shows as a rise of the level.

- `still_improving`: recent > previous + t. The level rose by more than the noise over the last w
  evaluations: more training would likely help.
- `flat_at_start`: no evaluation left the starting score by more than t (in either direction) while
  the training loss is still falling (the window's mean loss below the previous window's by more
  than `loss_tolerance`, relative): the run is learning something the validation score does not
  show yet (e.g. a VQA model still at the majority answer). Not converged.
- `converged`: neither. The level of the validation score has been flat within its noise over the
  last w evaluations (after a rise, a peak and a fall, or no change at all while the loss is flat).
- `too_short`: fewer than 2w evaluations after step 0: too few to judge. Not converged.
- `not_trained`: nothing was trained (the frozen model). Counted as converged.

With evaluations spaced further apart as a run goes on (`eval_growth`), w evaluations span a fixed
share of the run, so a rise that slows as training goes on (as most do) is still seen.

Early stopping (`length_policy: converge`) stops the first time the diagnosis reads `converged` at
or after both `min_steps` and `patience_ratio` times the step of the best evaluation so far
(patience that grows with the run: on easy-VQA a plateau a few hundred steps in is often followed by
a second rise, and a run whose best is recent is not done); a run that reaches its cap with any other
state is recorded as not converged. (Counting from `plateau_step`, the first step within the noise
of the best, stops flat runs sooner but stopped LoRA and MAM on their first plateau, 5 to 6 points
below where they went on to: docs/notes/2026-12-06-converged-verdicts.md.)
Peers: PETL_Vision (early stopping on validation), Chen et al., "Revisiting Parameter-Efficient
Tuning", EMNLP 2022 (training iterations drive PEFT instability; best-on-validation selection).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import median
from typing import Any, Sequence

STATES = ("converged", "still_improving", "flat_at_start", "too_short", "not_trained")
CONVERGED_STATES = ("converged", "not_trained")


@dataclass(frozen=True)
class Diagnosis:
    state: str  # one of STATES
    converged: bool
    best_step: int  # the step of the best validation score (0: the starting model)
    best_score: float
    plateau_step: int  # the first step whose score is within the noise (threshold) of the best
    start_score: float
    noise: float  # standard error of the validation score at the best evaluation
    threshold: float  # an improvement counts beyond this: noise_z * noise
    window: int  # evaluations judged together (the run's patience)
    evaluations: int  # evaluations on the curve, step 0 included
    earlier: float | None  # the level (median) of the window before the last
    recent: float | None  # the level (median) of the last window
    loss_falling: bool | None  # the training loss still falling over the window (None: not measurable)
    reason: str  # one sentence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)




def _loss_falling(losses: list[float | None], window: int, tolerance: float) -> bool | None:
    """Mean training loss of the last `window` evaluations against the `window` before them (fewer
    when the curve is short): falling when lower by more than `tolerance`, relative."""
    known = [x for x in losses if x is not None]
    if len(known) < 2:
        return None
    w = min(window, len(known) // 2) or 1
    recent, before = known[-w:], known[-2 * w:-w]
    mean_recent, mean_before = sum(recent) / len(recent), sum(before) / len(before)
    return mean_recent < mean_before * (1 - tolerance)


def diagnose(curve: Sequence[dict[str, Any]], window: int, noise_z: float = 1.0,
             loss_tolerance: float = 0.02, trained: bool = True) -> Diagnosis:
    """The state of a run from its evaluations (`curve`: dicts with step, val_score, val_se and loss,
    step 0 first). See the module docstring for the rule."""
    if not curve:
        raise ValueError("a curve needs at least its step-0 evaluation")
    scores = [float(r["val_score"]) for r in curve]
    k = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first best evaluation
    best, start = scores[k], scores[0]
    noise = float(curve[k].get("val_se") or 0.0)
    threshold = noise_z * noise
    w = max(1, int(window))
    plateau = next(int(r["step"]) for r, v in zip(curve, scores) if v >= best - threshold)
    base = dict(best_step=int(curve[k]["step"]), best_score=best, plateau_step=plateau, start_score=start,
                noise=noise, threshold=threshold, window=w, evaluations=len(scores))
    if not trained:
        return Diagnosis("not_trained", True, earlier=None, recent=None, loss_falling=None,
                         reason="nothing was trained", **base)
    if len(scores) < 2 * w + 1:
        return Diagnosis("too_short", False, earlier=None, recent=None, loss_falling=None,
                         reason=f"{len(scores) - 1} evaluations after step 0, fewer than the {2 * w} a judgement "
                                f"needs", **base)
    earlier, recent = median(scores[-2 * w:-w]), median(scores[-w:])
    falling = _loss_falling([r.get("loss") for r in curve[1:]], w, loss_tolerance)
    if recent > earlier + threshold:
        return Diagnosis("still_improving", False, earlier=earlier, recent=recent, loss_falling=falling,
                         reason=f"the level of the last {w} evaluations ({recent:.4g}, median) is above the level of "
                                f"the {w} before them ({earlier:.4g}) by more than the noise ({threshold:.3g})",
                         **base)
    if max(scores) <= start + threshold and min(scores) >= start - threshold and falling:
        return Diagnosis("flat_at_start", False, earlier=earlier, recent=recent, loss_falling=falling,
                         reason=f"validation has stayed within the noise ({threshold:.3g}) of its starting "
                                f"score {start:.4g} while the training loss is still falling", **base)
    return Diagnosis("converged", True, earlier=earlier, recent=recent, loss_falling=falling,
                     reason=f"the level of the last {w} evaluations ({recent:.4g}, median) is not above the level "
                            f"of the {w} before them ({earlier:.4g}) by more than the noise ({threshold:.3g}); best "
                            f"{best:.4g} at step {curve[k]['step']}", **base)


__all__ = ["Diagnosis", "diagnose", "STATES", "CONVERGED_STATES"]
