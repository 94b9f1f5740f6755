"""Text tokenizer: a `tokenizers` JSON file (Chameleon's `text_tokenizer.json` or one trained here).

Conventions of the released models (notes §4): encode without special tokens, the sequence builder
(`Vocab.text_turn`) prepends BOS = id 0, no EOS. Numbers are spelled one digit per token (Chameleon's
digits "0".."9" are ids 16399..16408), which is what lets a record's frame count be rewritten
in place (`lumos.data.records`).

    tok = TextTokenizer("ckpts/tokenizer/text_tokenizer.json")
    ids = tok.encode("a cat")           # list[int], no BOS
    tok.decode(ids)                     # "a cat"

`train_text_tokenizer` builds the small tokenizer of the built-in world. It is a byte-level BPE:
- byte-level: every string encodes (no unknown token; any UTF-8 character falls back to its bytes),
  and decode(encode(s)) == s exactly, which a word-level model cannot promise;
- BPE: the prompt template repeats the same ~25 words in every sequence; merges turn them into
  single tokens, so prompts stay short even with a few hundred ids (a character model would need
  ~170 tokens for the template alone);
- digits split individually before BPE (like Chameleon), so "24" is always ["2", "4"];
- `[BOS]` is the first special token, hence id 0, matching `Vocab.bos`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from lumos.utils import LumosError, atomic_write, first_line


class TextTokenizer:
    def __init__(self, path):
        from tokenizers import Tokenizer

        self.path = Path(path)
        if not self.path.is_file():
            raise LumosError(f"{self.path}: text tokenizer file not found (the released models use "
                             f"tokenizer/text_tokenizer.json; `train_text_tokenizer` makes a small one)")
        try:
            tok = Tokenizer.from_file(str(self.path))
        except Exception as e:
            raise LumosError(f"{self.path}: not a `tokenizers` JSON file ({first_line(e)})") from None
        self._set(tok)

    def _set(self, tok) -> None:
        self.tok = tok
        self.bos_id = 0
        self.bos_token = self.tok.id_to_token(0)   # "<s>" (Chameleon) or "[BOS]" (ours)
        if self.bos_token is None:
            raise LumosError(f"{self.path}: has no token with id 0 (the BOS every Lumos sequence starts with)")

    @classmethod
    def from_words(cls, words: list[str]) -> "TextTokenizer":
        """An in-memory word-level tokenizer: `[BOS]` = 0, `words[i]` = i + 1, `[UNK]` after them; words are
        split at whitespace. The synthetic videos' captions are such words (`SyntheticVideos.text_tokenizer`)."""
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocab = {w: i for i, w in enumerate(["[BOS]", *words, "[UNK]"])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.add_special_tokens(["[BOS]", "[UNK]"])
        self = cls.__new__(cls)
        self.path = None
        self._set(tok)
        return self

    def __repr__(self):
        return f"TextTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (the released file has 65,536 text ids plus the visual ones)."""
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without BOS/EOS."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and, per id, the (start, end) character span of `text` it came from."""
        enc = self.tok.encode(text, add_special_tokens=False)
        return enc.ids, [tuple(o) for o in enc.offsets]

    def save_pretrained(self, path) -> Path:
        """Copy the tokenizer's JSON file to `path` (a file name, e.g. a pipeline folder's text_tokenizer.json)."""
        from lumos.tokenizers.base import copy_file

        if self.path is None:                     # made in memory (`from_words`)
            with atomic_write(path, "w") as f:
                f.write(self.tok.to_str(pretty=False))
            return Path(path)
        return copy_file(self.path, path)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def digit_ids(self) -> list[int] | None:
        """Ids of "0".."9" when each is a single token (numbers are spelled digit by digit), else None."""
        ids = [self.tok.token_to_id(str(d)) for d in range(10)]
        if any(i is None for i in ids) or [self.encode(str(d)) for d in range(10)] != [[i] for i in ids]:
            return None
        return ids


def train_text_tokenizer(texts: Iterable[str], vocab_size: int, path, min_frequency: int = 2,
                         wrap_in_prompt: bool = True) -> TextTokenizer:
    """Train a byte-level BPE on `texts` (captions) and save it at `path` (same JSON format as
    Chameleon's file, `[BOS]` = id 0). `wrap_in_prompt` trains on the captions inside the video
    prompt template, which is what the tokenizer will see. vocab_size >= 257 (256 bytes + BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from lumos.vocab import video_prompt

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise LumosError(f"text vocab_size must be >= {len(alphabet) + 1} (all bytes + [BOS]), got {vocab_size}")
    texts = list(texts)
    if not texts:
        raise LumosError("train_text_tokenizer: no texts to train on")
    if wrap_in_prompt:
        # The numbers do not matter: digits are split before BPE and never merged.
        texts = [video_prompt(t, width=32, height=32, num_frames=12, fps=12) for t in texts]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=["[BOS]"],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if tok.token_to_id("[BOS]") != 0:  # guaranteed by special_tokens order; checked because Vocab relies on it
        raise RuntimeError("BPE trainer did not put [BOS] at id 0")
    with atomic_write(path, "w") as f:
        f.write(tok.to_str(pretty=False))
    return TextTokenizer(path)
