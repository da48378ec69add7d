"""Train a tokenizer (sentencepiece BPE/unigram with byte fallback, or HF byte-level BPE) into an HF directory.

The output directory loads with `transformers.AutoTokenizer.from_pretrained(DIR)` (no remote code, also on
transformers 4.x): `tokenizer.json` + `tokenizer_config.json` (class PreTrainedTokenizerFast) +
`special_tokens_map.json`, plus `llmctl_tokenizer.json` recording the type, special ids and the vocabulary padded
to a multiple of 128 for the model side. Sentencepiece models are converted to `tokenizers` here, piece by piece
(no protobuf, no transformers internals), with a pre-tokenizer that matches sentencepiece's own segmentation,
so `tokenizer.model` and `tokenizer.json` give the same ids (unigram: except a near-tie on a long line,
which sentencepiece's float32 sum can lose; `tokenizers` scores in float64). Training samples
`--max-sentences` lines itself, seeded, so one corpus and seed give one tokenizer on every run. Text
round-trips exactly (whitespace, Chinese, emoji): no whitespace normalisation, byte fallback for unseen
characters, no clean-up of spaces on decode.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from llmctl.core.errors import UserError
from llmctl.core.io import atomic_dir

from llmctl.core.special_tokens import LLMCTL_TOKENIZER_FILE

from .executors import Executor
from .readers import expand_inputs
from .tokenizer_corpus import corpus_pass, texts_in_key_order

TYPES = ("spm-bpe", "spm-unigram", "hf-bytelevel-bpe")
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
BASE_SPECIALS = (UNK, BOS, EOS, PAD)  # ids 0..3 for every type
MAX_PIECE_CHARS = 8000  # sentencepiece skips longer "sentences"; longer lines are cut into pieces this long


def padded_vocab(vocab_size: int, multiple: int = 128) -> int:
    return int(math.ceil(vocab_size / multiple) * multiple)


def iter_training_text(docs: Iterable[str]) -> Iterator[str]:
    """Lines of the documents, long lines cut to MAX_PIECE_CHARS (sentencepiece trains on lines)."""
    for text in docs:
        for line in text.split("\n"):
            for s in range(0, len(line), MAX_PIECE_CHARS):
                piece = line[s : s + MAX_PIECE_CHARS]
                if piece.strip():
                    yield piece


def sample_lines(lines: Iterable[str], k: int, seed: int) -> list[str]:
    """A uniform sample of k lines (reservoir), in corpus order: the same for the same corpus and seed.

    It bounds the trainer's memory as sentencepiece's `input_sentence_size` does, but that one draws from a
    generator seeded by the OS, so two runs on one corpus gave different tokenizers.
    """
    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if i < k:
            reservoir.append((i, line))
        else:
            j = rng.randrange(i + 1)
            if j < k:
                reservoir[j] = (i, line)
    reservoir.sort()
    return [line for _i, line in reservoir]


# ---- sentencepiece -----------------------------------------------------------------------------------------


def _train_spm(
    lines: Iterator[str],
    model_type: str,
    vocab_size: int,
    specials: Sequence[str],
    character_coverage: float,
) -> bytes:
    """A sentencepiece model trained on every line given (sampling is `sample_lines`' job)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines,
            model_writer=buf,
            model_type=model_type,
            vocab_size=vocab_size,
            byte_fallback=True,
            character_coverage=character_coverage,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            unk_piece=UNK,
            bos_piece=BOS,
            eos_piece=EOS,
            pad_piece=PAD,
            user_defined_symbols=list(specials),
            # exact round trips: no NFKC, no whitespace collapsing, no dummy prefix
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            max_sentence_length=4 * MAX_PIECE_CHARS + 16,
            input_sentence_size=0,  # every line: sentencepiece's own sampling is seeded from the OS
            shuffle_input_sentence=False,
            seed_sentencepiece_size=1000000,
            hard_vocab_limit=model_type != "unigram",
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        if "required_chars" in msg:
            raise UserError(
                f"--vocab-size {vocab_size} is too small for the characters in this corpus ({msg}); "
                "raise --vocab-size or lower --character-coverage (e.g. 0.995)"
            ) from None
        raise UserError(f"sentencepiece training failed: {msg}") from None
    return buf.getvalue()


def spm_to_tokenizers(model_proto: bytes, model_type: str, specials: Sequence[str]):
    """A `tokenizers.Tokenizer` giving the same ids as the sentencepiece model trained above."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    special_ids = [
        i for i in range(len(pieces)) if sp.is_unknown(i) or sp.is_control(i) or pieces[i][0] in set(specials)
    ]
    if model_type == "unigram":
        model = models.Unigram(pieces, unk_id=sp.unk_id(), byte_fallback=True)
    else:
        vocab = {p: i for i, (p, _s) in enumerate(pieces)}
        skip = set(special_ids)
        merges = []
        for piece, i in vocab.items():
            if i in skip or sp.is_byte(i) or len(piece) < 2:
                continue
            for k in range(1, len(piece)):
                left, right = piece[:k], piece[k:]
                if left in vocab and right in vocab:
                    merges.append((i, vocab[left], vocab[right], left, right))
        merges.sort()  # sentencepiece BPE merge order is the rank of the merged piece
        model = models.BPE(
            vocab, [(a, b) for *_ids, a, b in merges], unk_token=UNK, byte_fallback=True, fuse_unk=True
        )
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # no split at "▁": sentencepiece encodes the whole text, and a whitespace-only piece
            # ("▁▁") spans what a split would cut in two
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens([AddedToken(pieces[i][0], special=True, normalized=False) for i in special_ids])
    return tok


# ---- HF byte-level BPE -----------------------------------------------------------------------------------


def _train_bytelevel(lines: Iterator[str], vocab_size: int, specials: Sequence[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    all_specials = list(BASE_SPECIALS) + [s for s in specials if s not in BASE_SPECIALS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=all_specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


# ---- writing the HF directory ----------------------------------------------------------------------------


def write_tokenizer_dir(tok, out: Path, kind: str, specials: Sequence[str], extra: dict) -> dict:
    """Save tokenizer.json + configs that AutoTokenizer loads fast, plus llmctl's own small json."""
    tok.save(str(out / "tokenizer.json"))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    ids = {name: tok.token_to_id(name) for name in BASE_SPECIALS}
    missing = [n for n, i in ids.items() if i is None]
    if missing:
        raise UserError(f"trained tokenizer lacks special tokens {missing}")
    extra_specials = [s for s in specials if s not in BASE_SPECIALS]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "additional_special_tokens": extra_specials,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,  # exact round trips
        "model_max_length": 1000000000000000019884624838656,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    smap = {
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "additional_special_tokens": extra_specials,
    }
    (out / "special_tokens_map.json").write_text(json.dumps(smap, indent=2, ensure_ascii=False) + "\n")
    meta = {
        "type": kind,
        "vocab_size": vocab_size,
        "padded_vocab_size": padded_vocab(vocab_size),
        "bos_id": ids[BOS],
        "eos_id": ids[EOS],
        "pad_id": ids[PAD],
        "unk_id": ids[UNK],
        "special_tokens": {s: tok.token_to_id(s) for s in list(BASE_SPECIALS) + extra_specials},
        **extra,
    }
    (out / LLMCTL_TOKENIZER_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return meta


def train_tokenizer(
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    vocab_size: int,
    kind: str = "spm-bpe",
    special_tokens: Sequence[str] = (),
    text_key: str | None = None,
    character_coverage: float = 0.9995,
    max_sentences: int = 5_000_000,
    seed: int = 0,
    quiet: bool = False,
    num_shards: int | None = None,
    executor: Executor | None = None,
) -> dict:
    """Train on the documents of `inputs` and write an AutoTokenizer-loadable directory (atomically).

    The corpus pass runs as `num_shards` shards (default: the executor's workers) on `executor` (default: in
    this process); see `tokenizer_corpus`.
    """
    if kind not in TYPES:
        raise UserError(f"--type must be one of {', '.join(TYPES)}, got '{kind}'")
    if vocab_size < 300:
        raise UserError(f"--vocab-size {vocab_size} is too small (byte fallback alone needs 256 + specials)")
    specials = [s for s in special_tokens if s]
    files = expand_inputs(inputs)
    stage, corpus = corpus_pass(files, output_dir, text_key, num_shards, executor, silent=quiet)
    counted = {"docs": corpus["docs"], "chars": corpus["chars"]}
    if counted["docs"] == 0:
        raise UserError(f"no non-empty documents in {', '.join(files[:3])}")
    lines = iter(sample_lines(iter_training_text(texts_in_key_order(corpus["spills"])), max_sentences, seed))
    extra_specials = [s for s in specials if s not in BASE_SPECIALS]
    if kind.startswith("spm-"):
        model_type = kind.split("-", 1)[1]
        proto = _train_spm(lines, model_type, vocab_size, extra_specials, character_coverage)
        tok = spm_to_tokenizers(proto, model_type, extra_specials)
    else:
        proto = None
        tok = _train_bytelevel(lines, vocab_size, extra_specials)
    with atomic_dir(output_dir) as tmp:
        if proto is not None:
            (tmp / "tokenizer.model").write_bytes(proto)
        meta = write_tokenizer_dir(
            tok,
            tmp,
            kind,
            specials,
            {"trained_on": {"files": files, "docs": counted["docs"], "chars": counted["chars"]}},
        )
    shutil.rmtree(stage.work, ignore_errors=True)  # trained: the spill is no longer needed to resume
    meta["skipped"] = corpus["stats"]["dropped"]
    meta["run"] = corpus["run"]
    return meta
