"""`llmctl data sft` and its alias `llmctl data preprocess`, which takes MindSpeed's `preprocess_data.py` spellings.

A thin click wrapper over `preprocess.preprocess_sft`; added to the `llmctl data` group by llmctl-data's
plugin module (builtins.py).
"""

from __future__ import annotations

import click

from .handlers import HANDLERS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

EXAMPLE = """
\b
Example (the course lab's bilingual Alpaca, Qwen prompt format):
  llmctl data {name} --input alpaca-chinese-52k-v3.json --tokenizer-name-or-path Qwen2.5-7B \\
    --output-prefix finetune_dataset/alpaca --handler-name AlpacaStyleInstructionHandler --prompt-type qwen \\
    --map-keys '{{"prompt": "zh_instruction", "query": "zh_input", "response": "zh_output"}}' --workers 4
writes finetune_dataset/alpaca_packed_{{input_ids,attention_mask,labels}}_document.bin/.idx (int32, labels -100
outside assistant turns) and finetune_dataset/alpaca_sft.json (the report).
"""


def _options(f):
    opts = [
        click.option("--input", "inputs", multiple=True, required=True,
                     help="Input file(s) or directories (repeat or comma-separate): json, jsonl, parquet, csv."),
        click.option("--tokenizer-name-or-path", "--tokenizer", "tokenizer", required=True,
                     help="Tokenizer directory (any AutoTokenizer layout)."),
        click.option("--output-prefix", required=True, help="Writes PREFIX_packed_<key>_document.bin/.idx."),
        click.option("--handler-name", default="AlpacaStyleInstructionHandler", show_default=True,
                     help=f"Record format: {', '.join(HANDLERS)}."),
        click.option("--prompt-type", default="empty", show_default=True,
                     help="Template name (qwen, qwen_lf, qwen3, chatml, llama2, llama3, mistral, alpaca, default, "
                          "empty, or one from --prompt-type-path)."),
        click.option("--prompt-type-path", default=None, help="A templates.json file adding more templates."),
        click.option("--map-keys", default=None,
                     help="JSON mapping of handler keys to columns, e.g. '{\"prompt\": \"zh_instruction\"}'."),
        click.option("--num-shards", type=int, default=None,
                     help="Split the input into this many shards (default: --workers); the output does not depend on it."),
        click.option("--seq-length", type=int, default=None,
                     help="Longest sequence: samples keep at most seq-length - 1 tokens (prompt cut first)."),
        click.option("--pack", "pack_samples", is_flag=True, help="Greedy-knapsack samples into seq-length rows."),
        click.option("--neat-pack", is_flag=True, help="Pack, with segment ids 1,2,3.. in attention_mask."),
        click.option("--skip-empty", is_flag=True,
                     help="Count and skip records whose response is empty (default: an error naming the record)."),
        click.option("--log-interval", type=int, default=None, hidden=True, help="Accepted for MindSpeed; unused."),
        click.option("--tokenizer-type", default=None, hidden=True, help="Accepted for MindSpeed; ignored."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    from ..cli.common import _executor_options  # --workers, --executor, --ray-address: the same in every command

    return _executor_options(f)


def _run(inputs, tokenizer, output_prefix, handler_name, prompt_type, prompt_type_path, map_keys, workers,
         seq_length, pack_samples, neat_pack, skip_empty, log_interval, tokenizer_type, num_shards, executor_name,
         ray_address) -> None:
    from llmctl.core.errors import UserError

    from ..cli.common import _echo_resumed, _executor
    from .preprocess import preprocess_sft

    if tokenizer_type not in (None, "PretrainedFromHF"):
        raise UserError(f"--tokenizer-type {tokenizer_type}: only PretrainedFromHF (a HF tokenizer) is supported")
    report = preprocess_sft(inputs, tokenizer, output_prefix, handler_name, prompt_type, prompt_type_path,
                            map_keys, workers, seq_length, pack_samples, neat_pack, skip_empty,
                            warn=lambda m: click.echo(m, err=True), num_shards=num_shards,
                            executor=_executor(executor_name, workers, ray_address))
    _echo_resumed(report)
    rows = f", {report['packed_sequences']:,} packed sequences" if "packed_sequences" in report else ""
    click.echo(f"{report['records']:,} records -> {report['samples']:,} samples{rows}, {report['tokens']:,} tokens "
               f"({report['trained_tokens']:,} trained); truncated {report['truncated']}, dropped "
               f"{report['dropped']}, empty skipped {report['empty_skipped']} -> {output_prefix}_packed_*_document")


def add_sft_commands(group: click.Group) -> None:
    """Add `sft` and `preprocess` (same command, MindSpeed's name) to the `llmctl data` group."""
    for name in ("sft", "preprocess"):
        doc = ("Instruction / preference data -> MindSpeed's packed SFT/DPO files (int32 MMIDIDX)." if name == "sft"
               else "Alias of `llmctl data sft` under MindSpeed's preprocess_data.py name and flags.")

        def cmd(**kw):
            _run(**kw)

        cmd.__doc__ = doc + "\n" + EXAMPLE.format(name=name)
        group.command(name, context_settings=CONTEXT)(_options(cmd))
