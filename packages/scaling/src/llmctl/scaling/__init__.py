"""llmctl-scaling: decide what to train from a scaling-law fit of small runs.

`plan` writes an isoFLOP grid of ordinary pretrain configs, `run` launches each as a `llmctl pretrain` run on an
existing launcher (local, torchrun, Ray) with completion markers, `fit` fits L(N, D) (Chinchilla approach 3 and
approach 2) and loss → benchmark, `predict` reads `fit.json`. Fitting is numpy/scipy only, torch-free.
"""
