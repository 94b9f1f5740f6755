"""The text tokenizer: train, save, reload, round trips, BOS at 0, digits, unknown characters."""

import json

import pytest

from lumos.tokenizers.text import TextTokenizer, train_text_tokenizer
from lumos.utils import LumosError
from lumos.vocab import Vocab, video_prompt

CAPTIONS = [
    "a red digit 3 moves to the left",
    "a blue digit 7 bounces off the top wall",
    "two digits 1 and 8 cross in the middle",
    "a green digit 0 drifts slowly down",
    "the digit 5 spins and moves right",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_text_tokenizer(CAPTIONS, vocab_size=320, path=tmp_path_factory.mktemp("tt") / "text_tokenizer.json")


def test_saved_json_reloads_with_bos_at_zero(tok):
    spec = json.loads(tok.path.read_text())
    assert spec["added_tokens"][0]["id"] == 0 and spec["added_tokens"][0]["content"] == "[BOS]"
    again = TextTokenizer(tok.path)
    assert again.bos_token == "[BOS]" and again.vocab_size == tok.vocab_size <= 320
    text = video_prompt(CAPTIONS[0], 64, 32, 24, 12)
    assert again.encode(text) == tok.encode(text)


def test_round_trip_and_no_bos_in_encode(tok):
    for caption in CAPTIONS:
        text = video_prompt(caption, 448, 256, 24, 12)
        ids = tok.encode(text)
        assert 0 not in ids and tok.decode(ids) == text
    # BPE merged the template words: far fewer tokens than bytes
    text = video_prompt(CAPTIONS[1], 448, 256, 24, 12)
    assert len(tok.encode(text)) < len(text.encode()) / 2


def test_unknown_characters_do_not_crash(tok):
    text = "ünïcødé ✓ 🙂 漢字 \t tabs\nand newlines"
    ids = tok.encode(text)
    assert ids and max(ids) < tok.vocab_size and tok.decode(ids) == text


def test_digits_are_single_tokens(tok):
    digits = tok.digit_ids
    assert digits is not None and len(set(digits)) == 10
    assert tok.encode("2024") == [digits[2], digits[0], digits[2], digits[4]]
    # a number in the prompt is its digit tokens, so records can rewrite it
    ids, offsets = tok.encode_with_offsets("of 84 frames")
    span = [i for i, (a, b) in enumerate(offsets) if a >= 3 and b <= 5]
    assert [ids[i] for i in span] == [digits[8], digits[4]]


def test_builds_a_compact_turn(tok):
    vocab = Vocab.compact(tok.vocab_size, codebook_size=16)
    turn = vocab.text_turn(tok.encode("a red digit"))
    assert turn[0] == 0 and turn[-1] == vocab.sep


def test_errors(tmp_path):
    with pytest.raises(LumosError, match="not found"):
        TextTokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LumosError, match="not a `tokenizers` JSON"):
        TextTokenizer(tmp_path / "bad.json")
    with pytest.raises(LumosError, match=">= 257"):
        train_text_tokenizer(CAPTIONS, vocab_size=100, path=tmp_path / "t.json")
