"""The one tiny tokenizer the data and finetuning tests train: byte-level BPE with ChatML specials."""

from __future__ import annotations

from pathlib import Path

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def chatml_bpe_tokenizer(out: Path, texts: list[str], vocab_size: int) -> Path:
    """A byte-level BPE tokenizer trained on `texts` (ChatML specials; eos <|im_end|>, pad <|endoftext|>),
    saved as an HF dir."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=CHATML_SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=CHATML_SPECIALS[1:])
    fast.save_pretrained(out)
    return out
