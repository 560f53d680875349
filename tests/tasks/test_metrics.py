"""Caption metrics (hand-derived CIDEr-D values, BLEU/ROUGE sanity, METEOR through Java) and the
official VQA accuracy (normalisation, the leave-one-out formula)."""

import math
import random
import shutil

import pytest

from vlpeft.errors import UserError
from vlpeft.tasks import metrics
from vlpeft.tasks.metrics import caption_scores, normalize_vqa_answer, vqa_accuracy, vqa_scores


def scores(predictions, references):
    return caption_scores(predictions, references, meteor=False)


# --------------------------------------------------------------------------------------------
# CIDEr-D. With two images whose references share no word, every n-gram has idf log(2) - log(1);
# a perfect caption then has cosine 1 for each n-gram order it has, 0 for longer orders (no
# n-grams), so CIDEr-D = 10 * (orders present) / 4.


def test_cider_d_of_perfect_two_word_captions_is_five():
    s = scores(["red circle", "blue star"], [["red circle"], ["blue star"]])
    assert s["cider_d"] == pytest.approx(5.0)  # unigrams 1, bigrams 1, no 3/4-grams: 10 * 2/4
    assert s["rouge_l"] == pytest.approx(1.0)


def test_cider_d_word_shared_by_both_images_carries_no_weight():
    # "a" is in both images' references: idf log(2) - log(2) = 0, yet cosines stay 1; 3-grams exist now
    s = scores(["a red circle", "a blue star"], [["a red circle"], ["a blue star"]])
    assert s["cider_d"] == pytest.approx(7.5)


def test_cider_d_partial_and_unrelated_hand_derived():
    # image A: "red square" vs "red circle": unigram cosine 1/2, no shared bigram -> 10 * (1/2)/4 = 1.25
    partial = scores(["red square", "blue star"], [["red circle"], ["blue star"]])
    assert partial["cider_d"] == pytest.approx((1.25 + 5.0) / 2)
    unrelated = scores(["green cross", "blue star"], [["red circle"], ["blue star"]])
    assert unrelated["cider_d"] == pytest.approx((0.0 + 5.0) / 2)
    perfect = scores(["red circle", "blue star"], [["red circle"], ["blue star"]])
    assert perfect["cider_d"] > partial["cider_d"] > unrelated["cider_d"]
    assert perfect["bleu4"] >= partial["bleu4"] >= unrelated["bleu4"]


def test_cider_d_length_penalty_and_clipping_hand_derived():
    # "red circle red" vs "red circle": unigram tf (2, 1) vs (1, 1), clipped numerator 2, cosine 2/sqrt(10);
    # bigrams {red circle, circle red} vs {red circle}: 1/sqrt(2); Gaussian penalty exp(-1^2 / (2 * 6^2))
    s = scores(["red circle red", "blue star"], [["red circle"], ["blue star"]])
    image_a = 10 * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert s["cider_d"] == pytest.approx((image_a + 5.0) / 2)


def test_caption_scores_are_order_invariant_and_tokenised_in_python():
    preds = ["A red circle.", "two blue stars!", "a green cross", "the yellow diamond"]
    refs = [["a red circle", "red circle"], ["two blue stars"], ["a white cross", "one cross"], ["a yellow diamond"]]
    base = scores(preds, refs)
    order = [2, 0, 3, 1]
    shuffled = scores([preds[i] for i in order], [refs[i] for i in order])
    for key in ("bleu4", "rouge_l", "cider_d"):
        assert shuffled[key] == pytest.approx(base[key])
    assert scores(["A RED, circle!"], [["a red circle"]]) == scores(["a red circle"], [["a red circle"]])


def test_bleu4_of_identical_long_captions_is_one():
    captions = ["the cat sat on the mat", "a dog runs in the park"]
    s = scores(captions, [[c] for c in captions])
    assert s["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert s["metrics_ran"] == ["bleu4", "rouge_l", "cider_d"] and "meteor" not in s


def test_caption_scores_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="one non-empty reference list per prediction"):
        scores(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match=r"references\[0\] must be a non-empty list"):
        scores(["a"], ["a red circle"])


def test_meteor_left_out_with_reason_when_java_is_missing(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    s = caption_scores(["a red circle"], [["a red circle"]])  # meteor=None: run it when possible
    assert "meteor" not in s and s["metrics_ran"] == ["bleu4", "rouge_l", "cider_d"]
    assert "java" in s["metrics_skipped"]["meteor"]
    with pytest.raises(UserError, match="METEOR was asked for but cannot run"):
        caption_scores(["a red circle"], [["a red circle"]], meteor=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_runs_offline_through_java():
    s = caption_scores(["a red circle", "a blue star"], [["a red circle"], ["a blue star", "blue star"]], meteor=True)
    assert s["metrics_ran"] == ["bleu4", "rouge_l", "cider_d", "meteor"]
    assert s["meteor"] == pytest.approx(1.0)
    # the second call reuses the Java process
    worse = caption_scores(["a red circle", "a green cross"], [["a red circle"], ["a blue star"]])
    assert 0.0 < worse["meteor"] < s["meteor"]
    assert caption_scores(["zebra"], [["a blue star"]])["meteor"] == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------
# VQA accuracy


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two.", "2"),
        ("the dog", "dog"),
        ("A dog.", "dog"),
        ("dont", "don't"),
        ("yes!", "yes"),
        ("Yes", "yes"),
        ("1,000", "1000"),  # a digit-comma-digit anywhere deletes every mark instead of spacing it
        ("red,white", "red white"),  # a comma touching no space becomes a space
        ("red, white", "red white"),  # a comma touching a space is deleted
        ("2.5", "2.5"),  # a period before a digit stays
        ("  Ten\tcats\n", "10 cats"),
        ("none", "0"),
        ("x-ray", "x ray"),
        ("man's hat", "man's hat"),  # apostrophes and colons are not punctuation here
        ("3:00", "3:00"),
        ("an apple", "apple"),
        ("isnt", "isn't"),
    ],
)
def test_official_answer_normalisation(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_ten_answer_leave_one_out_formula(matches, expected):
    # 3 matches: leaving out a match leaves 2 -> 2/3, leaving out another answer leaves 3 -> 1;
    # (3 * 2/3 + 7 * 1) / 10 = 0.9
    answers = ["net"] * matches + ["mesh"] * (10 - matches)
    assert vqa_accuracy("net", answers) == pytest.approx(expected)


def test_accuracy_matches_the_leave_one_out_definition_on_random_cases():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 10)
        answers = [rng.choice(["yes", "no", "2", "two", "red"]) for _ in range(n)]
        pred = rng.choice(["yes", "2", "Two", "blue"])
        p = normalize_vqa_answer(pred)
        brute = sum(
            min(1.0, sum(normalize_vqa_answer(a) == p for j, a in enumerate(answers) if j != i) / 3) for i in range(n)
        ) / n
        assert vqa_accuracy(pred, answers) == pytest.approx(brute)


def test_single_answer_is_exact_match_after_normalisation():
    assert vqa_accuracy("yes", ["yes"]) == 1.0
    assert vqa_accuracy("no", ["yes"]) == 0.0
    assert vqa_accuracy("The circle.", ["circle"]) == 1.0
    assert vqa_accuracy("two", ["2"]) == 1.0
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0  # normalised even when all annotators agree


def test_vqa_scores_in_percent_with_groups():
    answers = [["net"] * 3 + ["mesh"] * 7, ["no"], ["three"]]
    s = vqa_scores(["net", "yes", "3"], answers, groups=["other", "yes/no", "number"])
    assert s["vqa_accuracy"] == pytest.approx(100 * (0.9 + 0 + 1) / 3)
    assert s["vqa_accuracy_by_group"] == pytest.approx({"number": 100.0, "other": 90.0, "yes/no": 0.0})
    assert s["n"] == 3 and s["metrics_ran"] == ["vqa_accuracy"]


def test_vqa_inputs_checked():
    with pytest.raises(ValueError, match="non-empty list of reference answers"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="non-empty list of reference answers"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="one answer list per prediction"):
        vqa_scores(["yes"], [["yes"], ["no"]])
