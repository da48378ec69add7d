"""The torch side of llmctl-core: the model, its kernels, devices, checkpoints, HF conversion, loading and
generation. Everything outside this package (and `llmctl.core.train`'s driver) imports without torch."""
