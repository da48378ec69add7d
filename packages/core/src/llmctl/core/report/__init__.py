"""`llmctl report`: the submission a course lab asks for, generated from what the runs left on disk.

    gather.py    read each run (training log, config, environment), eval results.json files, a throughput sweep
    figures.py   the PNGs: loss, exp(loss) after a token threshold, LR, grad norm, throughput, the ablations
    compose.py   the report as a list of blocks (headings, tables, images, code)
    render.py    those blocks as markdown and as a self-contained HTML page

Torch-free: a report is made wherever the logs are, with matplotlib only (`llmctl-core[plot]`).
"""
