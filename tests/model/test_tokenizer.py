"""WordPiece tokenizer: fixed special ids, no [UNK] for English words, round trips, determinism."""

import json
import os
import random
import string
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer, processors

from vlpeft.errors import UserError
from vlpeft.model.tokenizer import (
    SPECIAL_TOKENS,
    TextTokenizer,
    load_tokenizer,
    minimum_vocab_size,
    save_tokenizer,
    train_wordpiece,
)

CORPUS = [
    "a large red circle and a small blue square",
    "there is a small blue square and a large red circle",
    "two shapes: a red circle and a blue square",
    "what color is the circle?",
    "is the green star to the left of the white cross?",
    "from left to right: an orange diamond, a pink star and a purple triangle",
] * 20


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.from_tokenizer(train_wordpiece(CORPUS, vocab_size=200))


def test_special_ids_are_fixed(tok):
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.dec_id, tok.enc_id) == (
        0,
        1,
        2,
        3,
        4,
        5,
        6,
    )
    assert [tok.tokenizer.id_to_token(i) for i in range(7)] == list(SPECIAL_TOKENS)
    assert tok.vocab_size == tok.tokenizer.get_vocab_size() <= 200


def test_frequent_words_become_single_tokens(tok):
    assert tok.tokenize("A large red Circle") == ["a", "large", "red", "circle"]


def test_unseen_lowercase_words_have_no_unk(tok):
    rng = random.Random(0)
    words = ["xylophone", "quizzical", "teal", "rectangle", "jukebox", "0123456789", "fjord's"]
    words += ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 12))) for _ in range(200)]
    ids, _ = tok.encode_batch(words + [string.punctuation], max_len=64)
    assert tok.unk_id not in ids.tolist()
    assert tok.tokenize("Zürich Café") == tok.tokenize("zurich cafe")  # accents stripped, lowercased


@pytest.mark.parametrize(
    "text",
    [
        "A large red circle, and a small blue square.",
        "Is the green star to the left of the white cross?",
        "What's in the picture: a xylophone (wooden) and a t-shirt!",
        "There are 3.5 cats and 1,000 dogs; the price is $20.",
        "two   shapes   on\ta dark background",
    ],
)
def test_decode_of_encode_is_the_normalised_text(tok, text):
    ids, mask = tok.encode_batch([text], max_len=128)
    assert ids[0, 0] == tok.cls_id and ids[0, -1] == tok.sep_id and mask.all()
    assert tok.decode(ids[0]) == tok.normalize(text)


def test_encode_batch_pads_right_and_truncates_before_sep(tok):
    ids, mask = tok.encode_batch(["a red circle", "a large red circle and a small blue square"], max_len=6)
    assert ids.shape == mask.shape == (2, 6) and ids.dtype == mask.dtype == torch.long
    assert ids[0].tolist()[-1] == tok.pad_id and mask[0].tolist() == [1, 1, 1, 1, 1, 0]
    assert ids[1].tolist()[0] == tok.cls_id and ids[1].tolist()[-1] == tok.sep_id and mask[1].all()
    assert tok.decode(ids[1]) == "a large red circle"
    bare, _ = tok.encode_batch(["a red circle"], max_len=10, add_cls=False, add_sep=False)
    assert bare.shape == (1, 3) and tok.cls_id not in bare.tolist()[0]
    with pytest.raises(ValueError):
        tok.encode_batch(["x"], max_len=2)


def test_decode_stops_at_sep_or_pad_and_skips_specials(tok):
    ids, _ = tok.encode_batch(["red circle"], max_len=8)
    body = ids[0, 1:-1].tolist()
    assert tok.decode([tok.dec_id] + body + [tok.sep_id] + body) == "red circle"
    assert tok.decode([tok.enc_id, tok.mask_id] + body + [tok.pad_id] + body) == "red circle"
    assert tok.decode_batch(torch.tensor([[tok.dec_id] + body, [tok.pad_id] + body])) == ["red circle", ""]


@pytest.mark.slow
def test_same_texts_same_tokenizer_in_other_processes(tmp_path):
    """tokenizers' own trainer breaks ties by hash order; ours must not."""
    code = (
        "import sys, json; from vlpeft.model.tokenizer import train_wordpiece;"
        f"texts = json.loads({json.dumps(json.dumps(CORPUS))});"
        "sys.stdout.write(train_wordpiece(texts, vocab_size=150).to_str())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": s},
        ).stdout
        for s in ("0", "1")
    }
    assert len(outs) == 1
    assert outs == {train_wordpiece(CORPUS, vocab_size=150).to_str()}


def test_vocab_size_limits(tok):
    needed = minimum_vocab_size(CORPUS)
    assert len(train_wordpiece(CORPUS, vocab_size=needed + 5).get_vocab()) == needed + 5
    with pytest.raises(UserError, match=f"need {needed}"):
        train_wordpiece(CORPUS, vocab_size=needed - 1)


def test_save_load_round_trip(tmp_path, tok):
    save_tokenizer(tok, tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = ["is the green star to the left of the white cross?"]
    assert torch.equal(loaded.encode_batch(text, 32)[0], tok.encode_batch(text, 32)[0])
    assert loaded.vocab_size == tok.vocab_size and loaded.dec_id == 5 and loaded.enc_id == 6


def _write_bert_vocab(path):
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase] + ["red", "circle", "?", "."]
    path.write_text("\n".join(words) + "\n")
    return len(words)


def test_vocab_txt_gets_blip_tokens_appended(tmp_path):
    n = _write_bert_vocab(tmp_path / "vocab.txt")
    tok = load_tokenizer(tmp_path)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 4, 5, 6, 7)
    assert (tok.dec_id, tok.enc_id, tok.vocab_size) == (n, n + 1, n + 2)  # as BLIP's init_tokenizer: 30522, 30523
    ids, _ = tok.encode_batch(["Red circle?"], max_len=8)
    assert tok.decode(ids[0]) == "red circle?"
    plain = load_tokenizer(tmp_path / "vocab.txt", add_blip_tokens=False)
    assert plain.dec_id == plain.enc_id == plain.cls_id == 5 and plain.vocab_size == n


def test_tokenizer_json_with_bert_post_processor_and_padding(tmp_path):
    """Real BLIP checkpoints ship bert-base-uncased's tokenizer.json, which adds [CLS]/[SEP] itself."""
    _write_bert_vocab(tmp_path / "vocab.txt")
    raw: Tokenizer = load_tokenizer(tmp_path / "vocab.txt").tokenizer
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 5), ("[SEP]", 6)]
    )
    raw.enable_padding(length=16)
    raw.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)  # tokenizer.json preferred over vocab.txt
    ids, mask = tok.encode_batch(["red circle"], max_len=8)
    assert ids.tolist() == [[5, tok.tokenizer.token_to_id("red"), tok.tokenizer.token_to_id("circle"), 6]]
    assert mask.tolist() == [[1, 1, 1, 1]]


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(UserError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="tokenizer.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "missing.json")
