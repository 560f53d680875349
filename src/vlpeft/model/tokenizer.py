"""BERT-style WordPiece tokenizer: trained here for the tiny BLIP, or read from a real BLIP checkpoint.

Text pipeline (same as bert-base-uncased, which BLIP uses):
    BertNormalizer (clean control chars, lowercase, strip accents) -> BertPreTokenizer (split on
    whitespace and punctuation) -> WordPiece (greedy longest match; "##" marks a word's continuation).

Special tokens of a trained tokenizer, in this order and with these ids:
    [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 [DEC]=5 (decoder start, BLIP's bos) [ENC]=6 (BLIP's ITM token)
No post-processor: callers add [CLS]/[SEP] through `TextTokenizer.encode_batch` and put [DEC]/[ENC]
in position 0 themselves, as BLIP does.

Why our own vocabulary learner: `tokenizers`' WordPieceTrainer breaks ties between equally
frequent pairs by Rust hash-map order, which changes from process to process, so the same texts
gave different vocabularies run to run. `learn_wordpiece_vocab` is the same frequency-based merge
procedure (BPE with "##" continuations, as that trainer uses) with ties broken by the pair's text.
The vocabulary always holds every letter, digit and ASCII punctuation mark, and every letter and
digit as a "##" continuation, so any lowercase English word encodes without [UNK].
"""

from __future__ import annotations

import heapq
import os
import string
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from vlpeft.errors import UserError
from vlpeft.io import atomic_path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]")
BASE_ALPHABET = tuple(string.ascii_lowercase + string.digits + string.punctuation)
CONTINUATION_CHARS = tuple(string.ascii_lowercase + string.digits)  # punctuation is always split off
MAX_WORD_CHARS = 100  # longer words become [UNK], as in BERT

# How `decode` glues tokens back into text.
_ATTACH_LEFT = set(".,?!:;%)]}")  # "circle ." -> "circle."
_ATTACH_RIGHT = set("([{$")  # "( a" -> "(a"
_ATTACH_BOTH = set("'-/")  # "what ' s" -> "what's", "t - shirt" -> "t-shirt"


def _normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.BertPreTokenizer()


def _words(texts: Iterable[str]) -> Counter:
    """Word frequencies after normalisation and pre-tokenisation."""
    norm, pre = _normalizer(), _pre_tokenizer()
    counts: Counter = Counter()
    for text in texts:
        counts.update(w for w, _span in pre.pre_tokenize_str(norm.normalize_str(text)))
    return counts


def minimum_vocab_size(texts: Iterable[str] = ()) -> int:
    """Specials + alphabet + continuations: the smallest vocabulary `train_wordpiece` accepts."""
    return len(_base_vocab(_words(texts)))


def _base_vocab(counts: Counter) -> list[str]:
    chars = {c for w in counts for c in w}
    later = {c for w in counts for c in w[1:]}
    alphabet = sorted(set(BASE_ALPHABET) | chars)
    continuations = sorted({"##" + c for c in set(CONTINUATION_CHARS) | later})
    return list(SPECIAL_TOKENS) + alphabet + continuations


def learn_wordpiece_vocab(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> list[str]:
    """Vocabulary (index = id): specials, alphabet, continuations, then merged pieces in merge order.

    Repeatedly merges the most frequent adjacent pair of pieces over all words (ties: smaller pair
    text first) until `vocab_size` pieces exist or no pair occurs `min_frequency` times."""
    counts = _words(texts)
    vocab = _base_vocab(counts)
    if vocab_size < len(vocab):
        raise UserError(
            f"tokenizer: vocab_size={vocab_size} is too small; "
            f"the specials, alphabet and '##' continuations need {len(vocab)}"
        )
    known = set(vocab)
    words = [w for w in sorted(counts) if len(w) <= MAX_WORD_CHARS]
    freq = [counts[w] for w in words]
    pieces = [[w[0]] + ["##" + c for c in w[1:]] for w in words]  # per word, its current pieces

    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)
    for k, p in enumerate(pieces):
        for pair in zip(p, p[1:]):
            pair_count[pair] += freq[k]
            pair_words[pair].add(k)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        if pair_count.get((a, b), 0) != -neg:
            continue  # stale entry: the pair's count changed and a fresh entry was pushed
        if -neg < min_frequency:
            break
        merged = a + b[2:]  # b is always a "##" continuation
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        changed: set[tuple[str, str]] = set()
        for k in sorted(pair_words[(a, b)]):
            old = pieces[k]
            for pair in zip(old, old[1:]):
                pair_count[pair] -= freq[k]
                pair_words[pair].discard(k)
                changed.add(pair)
            new, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and old[i] == a and old[i + 1] == b:
                    new.append(merged)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            pieces[k] = new
            for pair in zip(new, new[1:]):
                pair_count[pair] += freq[k]
                pair_words[pair].add(k)
                changed.add(pair)
        for pair in sorted(changed):
            c = pair_count[pair]
            if c <= 0:
                pair_count.pop(pair, None)
                pair_words.pop(pair, None)
            else:
                heapq.heappush(heap, (-c, pair[0], pair[1]))
    return vocab


def _assemble(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> Tokenizer:
    """A WordPiece tokenizer learned from `texts`; the same texts give the same tokenizer.json."""
    vocab = learn_wordpiece_vocab(texts, vocab_size, min_frequency)
    model = models.WordPiece(
        vocab={t: i for i, t in enumerate(vocab)},
        unk_token="[UNK]",
        continuing_subword_prefix="##",
        max_input_chars_per_word=MAX_WORD_CHARS,
    )
    tok = _assemble(model)
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # already in the vocab: keeps ids, marks them special
    return tok


def tokenizer_from_vocab(vocab_path: str | os.PathLike) -> Tokenizer:
    """bert-base-uncased style tokenizer from a `vocab.txt` (one piece per line, line number = id)."""
    vocab_path = Path(vocab_path)
    if not vocab_path.is_file():
        raise UserError(f"{vocab_path}: vocabulary file not found")
    try:
        model = models.WordPiece.from_file(str(vocab_path), unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS)
    except Exception as e:
        raise UserError(f"{vocab_path}: cannot read WordPiece vocabulary ({e})") from e
    tok = _assemble(model)
    vocab = tok.get_vocab()
    tok.add_special_tokens([t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab])
    return tok


def save_tokenizer(tok: "Tokenizer | TextTokenizer", path: str | os.PathLike) -> None:
    """Write tokenizer.json atomically (`path` is the file, or a folder to hold tokenizer.json)."""
    raw = tok.tokenizer if isinstance(tok, TextTokenizer) else tok
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    with atomic_path(path) as tmp:
        tmp.write_text(raw.to_str(pretty=True), encoding="utf-8")


def load_tokenizer(path: str | os.PathLike, add_blip_tokens: bool = True) -> "TextTokenizer":
    """Read a tokenizer from a tokenizer.json, a vocab.txt, or a folder holding either (json preferred).

    With `add_blip_tokens`, a vocabulary without [DEC]/[ENC] gets them appended as special tokens,
    exactly as BLIP's `init_tokenizer` does to bert-base-uncased ([DEC]=30522, [ENC]=30523)."""
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif (path / "vocab.txt").is_file():
            path = path / "vocab.txt"
        else:
            raise UserError(f"{path}: no tokenizer.json or vocab.txt in this folder")
    if not path.is_file():
        raise UserError(f"{path}: tokenizer file not found")
    if path.suffix == ".txt":
        tok = tokenizer_from_vocab(path)
    else:
        try:
            tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{path}: not a valid tokenizer.json ({reason})") from e
    if add_blip_tokens:
        missing = [t for t in ("[DEC]", "[ENC]") if tok.token_to_id(t) is None]
        if missing:
            tok.add_special_tokens(missing)
    return TextTokenizer.from_tokenizer(tok, source=str(path))


@dataclass(frozen=True, eq=False)
class TextTokenizer:
    """A tokenizers.Tokenizer with the ids BLIP needs and batch encode/decode to tensors.

    dec_id is the decoder's start token ([DEC]); enc_id replaces [CLS] for image-grounded text
    encoding (ITM) ([ENC]). Either falls back to [CLS] when the vocabulary lacks it."""

    tokenizer: Tokenizer
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    dec_id: int
    enc_id: int
    vocab_size: int  # including added tokens: the embedding table needs this many rows

    @staticmethod
    def from_tokenizer(tok: Tokenizer, source: str = "tokenizer") -> "TextTokenizer":
        tok = Tokenizer.from_str(tok.to_str())  # own copy: padding/truncation below must not touch the caller's
        tok.no_padding()
        tok.no_truncation()
        tok.post_processor = None  # bert-base-uncased's tokenizer.json has one; specials are added explicitly here

        def need(name: str) -> int:
            i = tok.token_to_id(name)
            if i is None:
                raise UserError(f"{source}: the vocabulary has no {name} token")
            return i

        cls_id = need("[CLS]")
        dec, enc = tok.token_to_id("[DEC]"), tok.token_to_id("[ENC]")
        return TextTokenizer(
            tokenizer=tok,
            pad_id=need("[PAD]"),
            unk_id=need("[UNK]"),
            cls_id=cls_id,
            sep_id=need("[SEP]"),
            mask_id=need("[MASK]"),
            dec_id=cls_id if dec is None else dec,
            enc_id=cls_id if enc is None else enc,
            vocab_size=tok.get_vocab_size(with_added_tokens=True),
        )

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.dec_id, self.enc_id))

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it: lowercased, accents stripped, whitespace collapsed."""
        return " ".join(_normalizer().normalize_str(text).split())

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def encode_batch(
        self, texts: Sequence[str], max_len: int, add_cls: bool = True, add_sep: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids (B, L), attention_mask (B, L), both int64, right-padded with [PAD] to the
        longest row; L <= max_len. Long texts are cut so that [SEP] still ends them."""
        n_special = int(add_cls) + int(add_sep)
        if max_len <= n_special:
            raise ValueError(f"max_len={max_len} leaves no room for text after {n_special} special tokens")
        rows = []
        for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False):
            ids = enc.ids[: max_len - n_special]
            rows.append(([self.cls_id] if add_cls else []) + ids + ([self.sep_id] if add_sep else []))
        length = max((len(r) for r in rows), default=0)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, L)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one id sequence: stops at the first [SEP] or [PAD], skips other special tokens,
        joins "##" pieces to their word and punctuation to its neighbours."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        stop, skip = {self.sep_id, self.pad_id}, self.special_ids
        words: list[str] = []
        glue_next = False  # the previous token attaches to the next one
        digit_glue = False  # the previous token is "." or "," after a digit: glue only to a digit ("3.5", "1,000")
        for i in ids:
            i = int(i)
            if i in stop:
                break
            if i in skip:
                continue
            token = self.tokenizer.id_to_token(i)
            if token is None:
                continue
            if token.startswith("##"):
                if words:
                    words[-1] += token[2:]
                else:
                    words.append(token[2:])
            elif words and (
                glue_next or token in _ATTACH_LEFT or token in _ATTACH_BOTH or (digit_glue and token[0].isdigit())
            ):
                words[-1] += token
            else:
                words.append(token)
            glue_next = token in _ATTACH_RIGHT or token in _ATTACH_BOTH
            digit_glue = token in ".," and len(words[-1]) > 1 and words[-1][-2].isdigit()
        return " ".join(words)

    def decode_batch(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(row) for row in ids]
