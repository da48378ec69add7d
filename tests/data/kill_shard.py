"""Run `llmctl ARGS...` with one stage's shard SIGKILLed midway: a test's fault injection, outside production code.

    python kill_shard.py MODULE:CLASS SHARD -- data tokenize --input ...

wraps `CLASS.run` (e.g. `llmctl.data.tokens:TokenizeStage`) so that, on shard SHARD, the process kills
itself with SIGKILL after the shard has read its first documents: no cleanup handler runs, as in a real crash.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys


def _killing(documents):
    """The shard's documents; the process dies once a few have been read."""

    class Dying:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __iter__(self):
            for i, d in enumerate(self.inner):
                yield d
                if i == 2:  # three documents consumed (and maybe written): die mid-shard
                    os.kill(os.getpid(), signal.SIGKILL)

        def records(self, *a, **k):
            for i, r in enumerate(self.inner.records(*a, **k)):
                yield r
                if i == 2:
                    os.kill(os.getpid(), signal.SIGKILL)

        def slabs(self, *a, **k):
            for i, b in enumerate(self.inner.slabs(*a, **k)):
                yield b
                if i == 1:  # two batches consumed (the first maybe written): die mid-shard
                    os.kill(os.getpid(), signal.SIGKILL)

        def chunks(self, *a, **k):
            for c in self.inner.chunks(*a, **k):
                yield c
                os.kill(os.getpid(), signal.SIGKILL)  # the first chunk consumed: die mid-shard

    return Dying(documents)


def main() -> None:
    target, shard, sep, *args = sys.argv[1:]
    assert sep == "--"
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    original = cls.run

    def run(self, documents, index, num_shards):
        if index == int(shard):
            documents = _killing(documents)
        return original(self, documents, index, num_shards)

    cls.run = run
    from llmctl.cli.main import build_cli

    build_cli()(args, prog_name="llmctl")


if __name__ == "__main__":
    main()
