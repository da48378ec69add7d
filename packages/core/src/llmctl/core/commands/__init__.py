"""llmctl-core's commands, one module per command group; nothing in core imports them but the plugin's
`register_commands`. Each imports torch inside its commands, so `llmctl --help` works on a torch-free box.

    plugins.py    llmctl plugins
    pretrain.py   llmctl pretrain (the training driver's face; finetuning's command reuses its done line)
    model.py      llmctl convert hf-to-native|native-to-hf, llmctl generate
    mcore.py      llmctl convert hf-to-mcore|mcore-to-hf|native-to-mcore|mcore-to-native (hf2mcore, mcore2hf)
    plot.py       llmctl plot curves|exp-loss|summary
    bench.py      llmctl bench throughput (of logs, or a sweep of pretrain runs)
    report.py     llmctl report (a lab report from runs, evals and a sweep; built in llmctl.core.report)
    litgpt.py     llmctl convert litgpt-config (a litgpt pretrain YAML as an llmctl config)
"""

from __future__ import annotations

import click


def add_commands(cli: click.Group) -> None:
    from .bench import bench_group
    from .litgpt import add_litgpt_commands
    from .mcore import add_mcore_commands
    from .model import convert_group, generate_command
    from .plot import plot_group
    from .plugins import plugins_command
    from .pretrain import pretrain_command
    from .report import report_command

    add_mcore_commands(convert_group)
    add_litgpt_commands(convert_group)
    for command in (plugins_command, convert_group, generate_command, pretrain_command, plot_group, bench_group,
                    report_command):
        cli.add_command(command)
