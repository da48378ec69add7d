"""The model's shape as data: `ModelConfig` and the named presets. Torch-free, so configs, `--print-config`,
HF config.json mapping and checkpoint metadata need no torch; `llmctl.core.nn.model` builds the module from it.

Vocabulary padding is Megatron's (`--make-vocab-size-divisible-by`): the embedding and output layer have
`padded_vocab_size` rows, `vocab_size` rounded up to a multiple of `make_vocab_size_divisible_by` x the
tensor-parallel size, so any tokenizer works at any TP and the matrices have friendly shapes. `vocab_size`
stays the tokenizer's (or the rows a checkpoint brings, e.g. Qwen2.5's 151936 for 151665 ids): the rows past
it are llmctl's padding, zero, never trained and masked out of every softmax, so padding never changes the
model (stricter than Megatron, which trains the padded logits).
"""

from __future__ import annotations

import dataclasses

from .errors import UserError

#: ModelConfig fields that say how the vocabulary rows are laid out, not what the model computes: a
#: checkpoint resumes, or starts another run, whatever they were when it was saved.
VOCAB_LAYOUT_FIELDS = ("make_vocab_size_divisible_by", "padded_vocab_size")


def pad_vocab_size(vocab_size: int, divisible_by: int, tp: int = 1) -> int:
    """Megatron's padded vocabulary: `vocab_size` rounded up to a multiple of `divisible_by` x `tp`."""
    if divisible_by < 1:
        raise UserError(f"model.make_vocab_size_divisible_by must be >= 1, got {divisible_by}")
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple


@dataclasses.dataclass
class ModelConfig:
    vocab_size: int = 32000  # the tokenizer's ids (or the rows a checkpoint brings): what every softmax covers
    make_vocab_size_divisible_by: int = 128  # Megatron's: rows padded to a multiple of this x TP
    padded_vocab_size: int | None = None  # derived (a run sets it for its TP; None: for TP 1); in checkpoints
    hidden_size: int = 896
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int | None = None  # None = num_heads (MHA); fewer = GQA
    ffn_hidden_size: int = 4864
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # Llama-3 style: {rope_type: llama3, factor, low_freq_factor, ...}
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    tie_embeddings: bool = False
    family: str = "llama"  # weight-name adapter for HF import/export: llama | qwen2
    init_std: float = 0.02

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def padded_for(self, tp: int = 1) -> int:
        """The embedding/output rows a run at tensor-parallel size `tp` uses."""
        return pad_vocab_size(self.vocab_size, self.make_vocab_size_divisible_by, tp)

    @property
    def vocab_rows(self) -> int:
        """Rows of the embedding and output layer: `padded_vocab_size`, or the TP 1 padding when unset."""
        return self.padded_vocab_size or self.padded_for(1)

    def validate(self) -> None:
        if self.vocab_size < 1:
            raise UserError(f"model.vocab_size must be >= 1, got {self.vocab_size}")
        self.padded_for(1)  # make_vocab_size_divisible_by >= 1
        if self.padded_vocab_size is not None and self.padded_vocab_size < self.vocab_size:
            raise UserError(f"model.padded_vocab_size {self.padded_vocab_size} cannot hold model.vocab_size "
                            f"{self.vocab_size}")
        if self.hidden_size % self.num_heads:
            raise UserError(f"model.hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.kv_heads:
            raise UserError(f"model.num_heads {self.num_heads} not divisible by num_kv_heads {self.kv_heads}")
        if self.head_dim % 2:
            raise UserError(f"model head_dim {self.head_dim} must be even for RoPE")
        if self.rope_scaling and self.rope_scaling.get("rope_type", self.rope_scaling.get("type")) not in (
                "llama3", "default", None):
            raise UserError(f"model.rope_scaling type {self.rope_scaling!r} is not supported (llama3, default)")

    def num_params(self) -> int:
        h, f, v = self.hidden_size, self.ffn_hidden_size, self.vocab_size
        attn = h * self.head_dim * (self.num_heads * 2 + self.kv_heads * 2)
        bias = self.head_dim * (self.num_heads + 2 * self.kv_heads) if self.qkv_bias else 0
        per_layer = attn + bias + 3 * h * f + 2 * h
        return self.num_layers * per_layer + v * h * (1 if self.tie_embeddings else 2) + h

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (fwd+bwd = 6N plus attention scores), the MFU numerator."""
        n_matmul = self.num_params() - self.vocab_size * self.hidden_size * (0 if self.tie_embeddings else 1)
        attn = 12 * self.num_layers * self.hidden_size * seq_len / 2  # causal: half the score matrix
        return 6 * n_matmul + attn


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_hidden_size=176, max_seq_len=256),
    # The course lab's ~500M llama-2-like model (MindSpeed scripts/pretrain_model.sh).
    "zen-500m": ModelConfig(vocab_size=32000, hidden_size=896, num_layers=24, num_heads=16,
                            ffn_hidden_size=4864, max_seq_len=4096),
    # The single-GPU tutorial's litgpt "MiniLM" (configs/pretrain.yaml): llama-3.1 shaped, GQA 16/8, head 48,
    # the 6400-token minimind tokenizer, block 512, embeddings tied (its train.tie_embeddings): 108.7M params.
    "minilm-0.1b": ModelConfig(vocab_size=6400, hidden_size=768, num_layers=16, num_heads=16, num_kv_heads=8,
                               ffn_hidden_size=2048, max_seq_len=512, tie_embeddings=True),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14,
                                num_kv_heads=2, ffn_hidden_size=4864, max_seq_len=32768, rope_theta=1e6,
                                norm_eps=1e-6, qkv_bias=True, tie_embeddings=True, family="qwen2"),
    "qwen2.5-7b": ModelConfig(vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
                              num_kv_heads=4, ffn_hidden_size=18944, max_seq_len=32768, rope_theta=1e6,
                              norm_eps=1e-6, qkv_bias=True, family="qwen2"),
    "llama2-7b": ModelConfig(vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32,
                             ffn_hidden_size=11008, max_seq_len=4096),
    "llama3-8b": ModelConfig(vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                             ffn_hidden_size=14336, max_seq_len=8192, rope_theta=500000.0),
}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        from .config import did_you_mean

        raise UserError(f"unknown model preset '{name}'{did_you_mean(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
