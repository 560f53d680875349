"""Caption metrics through pycocoevalcap: BLEU-4, ROUGE-L and CIDEr-D (its `Cider` class is the
CIDEr-D variant of the coco-caption toolkit: Gaussian length penalty, clipped counts, x10).

Tokenisation is done here in Python (lower-case, punctuation removed, whitespace split), so no
Java PTB tokenizer and no network are needed; METEOR (Java) is added by the tasks issue.
"""

from __future__ import annotations

import re
from typing import Sequence

_PUNCT = re.compile(r"[^\w\s]")


def caption_tokens(text: str) -> str:
    """'A Red circle, and...' -> 'a red circle and' (the form pycocoevalcap scorers expect)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus-level BLEU-4, ROUGE-L and CIDEr-D of predictions[i] against references[i] (>= 1 each)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one non-empty reference list per prediction ({len(predictions)} vs {len(references)})")
    res = {i: [caption_tokens(p)] for i, p in enumerate(predictions)}
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "rouge_l": float(rouge), "cider_d": float(cider)}
