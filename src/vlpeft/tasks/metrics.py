"""Task metrics: caption scores (BLEU-4, ROUGE-L, CIDEr-D, METEOR) and the official VQA accuracy.

Captions
--------
BLEU-4, ROUGE-L and CIDEr-D come from pycocoevalcap's Python scorers (its `Cider` class is the
CIDEr-D variant of the coco-caption toolkit: Gaussian length penalty, clipped counts, x10, idf from
the references of the scored corpus). METEOR is pycocoevalcap's METEOR 1.5 jar, run in a Java
subprocess (`java -jar meteor-1.5.jar - - -stdio -l en -norm`, the coco-caption command); it needs
only the jar and the paraphrase table shipped in the package, no network. Starting it costs about
10 s (the JVM loads the paraphrase table), so one process is started per Python process and reused.

Scales: every caption score is on pycocoevalcap's own scale (BLEU, ROUGE-L, METEOR in [0, 1];
CIDEr-D in [0, 10]); papers print them x100.

Tokenisation is done here in Python (lower-case, punctuation removed, whitespace split) instead of
coco-caption's Java PTB tokenizer, for every metric alike.

VQA
---
`vqa_accuracy` is the VQA challenge's accuracy (Antol et al. 2015; the `vqaEval.py` of
github.com/GT-Vision-Lab/VQA), re-implemented here:

    acc(pred, answers) = 1/n * sum_{i=1..n} min(1, #{j != i : answers[j] == pred} / 3)

i.e. the mean, over the n leave-one-out subsets of the human answers, of min(1, matches / 3). With
VQAv2's 10 answers a prediction matching m of them scores (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10:
0, 0.3, 0.6, 0.9, 1 for m = 0, 1, 2, 3, >= 4. Other n use the same formula (which is what the
official script computes for any n), except n == 1 (easy-VQA, synthetic scenes): there the only
leave-one-out subset is empty, so the formula would always give 0; we score exact match instead.
(With n = 2 or 3 the formula caps below 1; no source used here has that many answers.)

Answers are normalised as the official script does (`normalize_vqa_answer`). One deliberate
difference: the official script normalises the prediction and the human answers only when the
human answers disagree (when all 10 agree, an un-normalised "Two" does not match "2"); we normalise
always, so a question's score never depends on whether its annotators happened to agree.
VQA accuracy is reported in [0, 100] by `vqa_scores`, as the VQA papers do.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import defaultdict
from typing import Any, Sequence

from vlpeft.errors import UserError

_PUNCT = re.compile(r"[^\w\s]")


def caption_tokens(text: str) -> str:
    """'A Red circle, and...' -> 'a red circle and' (the form pycocoevalcap scorers expect)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def caption_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], meteor: bool | None = None
) -> dict[str, Any]:
    """Corpus-level BLEU-4, ROUGE-L, CIDEr-D (and METEOR) of predictions[i] against references[i].

    `meteor`: None runs METEOR when Java is on PATH and leaves it out (with the reason) when Java
    is missing or the jar fails; True requires it (UserError otherwise); False skips it.
    Returns the scores plus "metrics_ran" (the metric names computed, in order) and, when a metric
    was left out, "metrics_skipped": {name: reason}."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one non-empty reference list per prediction ({len(predictions)} vs {len(references)})")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of captions, got {refs!r}")
    res = {i: [caption_tokens(p)] for i, p in enumerate(predictions)}
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, per_image = Cider().compute_score(gts, res)
    scores: dict[str, Any] = {"bleu4": float(bleu[3]), "rouge_l": float(rouge), "cider_d": float(cider),
                              "cider_d_se": bootstrap_se(per_image)}
    ran = ["bleu4", "rouge_l", "cider_d"]
    skipped: dict[str, str] = {}
    if meteor is not False:
        why_not = meteor_unavailable()
        if why_not is None:
            try:
                scores["meteor"] = _meteor_process().score([res[i][0] for i in res], [gts[i] for i in gts])
                ran.append("meteor")
            except RuntimeError as e:
                why_not = str(e)
        if why_not is not None:
            if meteor is True:
                raise UserError(f"caption metrics: METEOR was asked for but cannot run ({why_not})")
            skipped["meteor"] = why_not
    scores["metrics_ran"] = ran
    if skipped:
        scores["metrics_skipped"] = skipped
    return scores


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of per-example scores: sd / sqrt(n) (sample sd, n - 1); 0 for one
    value. For VQA accuracy with one answer per question (exact match) this is the binomial standard
    error sqrt(p (1 - p) / n), up to n / (n - 1)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5


BOOTSTRAPS = 1000


def bootstrap_se(per_example: Sequence[float], boots: int = BOOTSTRAPS, seed: int = 0) -> float:
    """Standard error of a corpus score that is the mean of per-image scores (pycocoevalcap's CIDEr-D),
    by a seeded bootstrap over the images: the sd of the resampled means. (Each image's score keeps the
    document frequencies of the whole scored corpus: the resampling moves images, not the idf.)"""
    import numpy as np

    v = np.asarray(per_example, float)
    if len(v) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    return float(v[rng.integers(0, len(v), size=(boots, len(v)))].mean(1).std(ddof=1))


# ---------------------------------------------------------------------------------------------
# METEOR: pycocoevalcap's jar, one reused subprocess


def _meteor_dir() -> str | None:
    try:
        import pycocoevalcap.meteor.meteor as m
    except ImportError:
        return None
    return os.path.dirname(os.path.abspath(m.__file__))


def meteor_unavailable() -> str | None:
    """Why METEOR cannot run here (no Java, no jar), or None when it can be tried."""
    if shutil.which("java") is None:
        return "no `java` on PATH"
    folder = _meteor_dir()
    if folder is None or not os.path.isfile(os.path.join(folder, "meteor-1.5.jar")):
        return "pycocoevalcap's meteor-1.5.jar is missing"
    return None


class _Meteor:
    """A METEOR 1.5 process in `-stdio` mode. Per caption it answers a 'SCORE ||| refs ||| hyp'
    line with a statistics line; an 'EVAL ||| stats ||| ...' line then yields one score per
    caption and the corpus score (computed from the summed statistics, as coco-caption does)."""

    def __init__(self) -> None:
        folder = _meteor_dir()
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: a full stderr pipe would block Java
        self._proc = subprocess.Popen(
            ["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def alive(self) -> bool:
        """Running, and started by this process (a forked child must not share the parent's pipes)."""
        return self._pid == os.getpid() and self._proc.poll() is None

    def _ask(self, line: str, n_answers: int = 1) -> list[str]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write((line + "\n").encode("utf-8"))
            self._proc.stdin.flush()
            answers = [self._proc.stdout.readline().decode("utf-8").strip() for _ in range(n_answers)]
        except (BrokenPipeError, OSError) as e:
            raise RuntimeError(f"METEOR process failed: {e}{self._stderr_tail()}") from e
        if any(not a for a in answers):
            raise RuntimeError(f"METEOR process ended (exit code {self._proc.poll()}){self._stderr_tail()}")
        return answers

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:]
        return f": {tail[0]}" if tail else ""

    def score(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        with self._lock:
            stats = []
            for hyp, refs in zip(hypotheses, references):
                clean = [r.replace("|||", "") for r in refs]
                stats += self._ask(" ||| ".join(["SCORE", *clean, hyp.replace("|||", "")]))
            answers = self._ask(" ||| ".join(["EVAL", *stats]), n_answers=len(stats) + 1)
        try:
            return float(answers[-1])
        except ValueError as e:
            raise RuntimeError(f"METEOR answered {answers[-1]!r} instead of a score") from e

    def close(self) -> None:
        if self._pid != os.getpid():
            return  # the parent's process: leave it to the parent
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._stderr.close()


_METEOR: _Meteor | None = None
_METEOR_LOCK = threading.Lock()


def _meteor_process() -> _Meteor:
    """The process of this Python process, (re)started when absent or dead."""
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is None or not _METEOR.alive():
            if _METEOR is not None and _METEOR._pid == os.getpid():
                _METEOR.close()
            try:
                _METEOR = _Meteor()
            except OSError as e:
                raise RuntimeError(f"cannot start java ({e})") from e
            atexit.register(_METEOR.close)
        return _METEOR


# ---------------------------------------------------------------------------------------------
# VQA accuracy

# The official script's tables (vqaEval.py). Its keys "Id've", "Im", "Ive" hold capitals and so never
# match lower-cased text, and it maps "somebody'd" to "somebodyd"; both kept as they are.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")  # "2.5" keeps its point, "dog." loses it


def _vqa_punctuation(text: str) -> str:
    """The official processPunctuation: each mark is deleted when it touches a space somewhere in the
    answer, or when the answer holds a digit-comma-digit ("1,000"), else it becomes a space; then
    every period not followed by a digit is deleted. Apostrophes and colons stay."""
    out = text
    strip_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _VQA_PUNCT:
        touches_space = (p + " ") in text or (" " + p) in text  # tested on the input, as the original does
        out = out.replace(p, "" if strip_all or touches_space else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def normalize_vqa_answer(answer: str, keep_articles: bool = False) -> str:
    """Official VQA answer normalisation: 'Two dogs!' -> '2 dogs', 'the dog' -> 'dog', 'dont' -> "don't".

    Newlines/tabs to spaces, strip; punctuation as `_vqa_punctuation`; then lower-case, split on
    whitespace, number words 'none'/'zero'..'ten' -> digits, articles a/an/the dropped (kept with
    `keep_articles`: a task whose answers are letters "A".."D"), the contraction table applied word by
    word, words joined by single spaces."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    text = _vqa_punctuation(text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if keep_articles or w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str], keep_articles: bool = False) -> float:
    """VQA accuracy in [0, 1] of one predicted answer against the human answers (see the module
    docstring): leave-one-out mean of min(1, matches / 3); exact match when there is one answer."""
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError(f"need a non-empty list of reference answers, got {answers!r}")
    pred = normalize_vqa_answer(prediction, keep_articles)
    n = len(answers)
    m = sum(normalize_vqa_answer(a, keep_articles) == pred for a in answers)
    if n == 1:
        return float(m)
    # leaving out one of the m matching answers leaves m - 1 matches, any other leaves m
    return (m * min(1.0, (m - 1) / 3) + (n - m) * min(1.0, m / 3)) / n


def vqa_scores(
    predictions: Sequence[str], answer_lists: Sequence[Sequence[str]], groups: Sequence[str] | None = None,
    keep_articles: bool = False,
) -> dict[str, Any]:
    """Mean VQA accuracy x100 (in [0, 100], as VQA papers report it) of predictions[i] against
    answer_lists[i]; with `groups` (e.g. answer types "yes/no", "number", "other"), also the mean
    per group under "vqa_accuracy_by_group". "metrics_ran" names what was computed."""
    if len(predictions) != len(answer_lists) or not predictions:
        raise ValueError(f"need one answer list per prediction ({len(predictions)} vs {len(answer_lists)})")
    accs = [vqa_accuracy(p, a, keep_articles) for p, a in zip(predictions, answer_lists)]
    scores: dict[str, Any] = {"vqa_accuracy": 100.0 * sum(accs) / len(accs), "n": len(accs),
                              "vqa_accuracy_se": 100.0 * standard_error(accs)}
    if groups is not None:
        if len(groups) != len(accs):
            raise ValueError(f"need one group per prediction ({len(groups)} vs {len(accs)})")
        by: dict[str, list[float]] = defaultdict(list)
        for g, acc in zip(groups, accs):
            by[g].append(acc)
        scores["vqa_accuracy_by_group"] = {g: 100.0 * sum(v) / len(v) for g, v in sorted(by.items())}
    scores["metrics_ran"] = ["vqa_accuracy"]
    return scores
