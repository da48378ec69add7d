"""`llmctl convert litgpt-config PRETRAIN_YAML --out CONFIG_YAML`: a litgpt pretrain config (the single-GPU
tutorial's configs/pretrain.yaml) as an llmctl pretraining config, checked by the same loader `llmctl
pretrain` uses before it is written. The mapping is `llmctl.core.litgpt_config`. Torch-free."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from ..io import write_text_atomic


def add_litgpt_commands(convert_group: click.Group) -> None:
    convert_group.add_command(litgpt_config_command)


@click.command("litgpt-config")
@click.argument("litgpt_yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The llmctl config to write (YAML).")
@click.option("--data-path", default=None, metavar="PREFIX",
              help="data.path: the `llmctl data tokenize --output-prefix` to train on (litgpt's litdata "
                   "dataset is not read).")
def litgpt_config_command(litgpt_yaml: Path, out: Path, data_path: str | None) -> None:
    """Map a litgpt `pretrain` YAML (model_config, train, eval, optimizer, precision, logger_name, ...) to an
    llmctl pretraining config; keys without an equivalent are dropped with a note, unsupported values and
    unknown keys are errors.

    \b
    Example:
      llmctl convert litgpt-config configs/pretrain.yaml --out minilm.yaml --data-path data/minilm/corpus
      llmctl pretrain -c minilm.yaml
    """
    from ..litgpt_config import convert_file
    from ..train.config import load_train_config

    cfg, notes = convert_file(litgpt_yaml, data_path)
    load_train_config(cfg, resolve_vocab=False)  # every value checked as `llmctl pretrain -c` will check it
    header = [f"# llmctl pretraining config converted from the litgpt config {litgpt_yaml}",
              *(f"#   {n}" for n in notes)]
    write_text_atomic(out, "\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    for n in notes:
        click.echo(f"  {n}")
    click.echo(f"wrote {out}: llmctl pretrain -c {out}")
