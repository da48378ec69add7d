"""llmctl-data never needs torch: every module imports, and the whole CLI pipeline runs, with torch hidden."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

IMPORT_ALL = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import importlib, pkgutil
    import llmctl.data
    names = sorted(m.name for m in pkgutil.walk_packages(llmctl.data.__path__, "llmctl.data."))
    for name in names:
        importlib.import_module(name)
    from llmctl.cli.main import build_cli
    build_cli()
    from llmctl.core.plugins import lookup
    assert lookup("datasets", "gpt").__module__ == "llmctl.data.gpt_dataset"
    print(len(names), "modules")
""")


def test_every_module_imports_with_torch_hidden():
    res = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[0]) >= 15


def test_pipeline_runs_with_torch_hidden_in_every_process(tmp_path):
    # a `torch` package that refuses to import, first on the path of this process and of every worker it spawns
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is hidden for this test')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]),
        "LLMCTL_PROGRESS": "0",
    }

    def llmctl(*args):
        res = subprocess.run(
            [sys.executable, "-m", "llmctl.cli", "data", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert res.returncode == 0, (args, res.stderr)
        return res.stdout

    d = tmp_path
    llmctl("synth", "--out-dir", d / "toy", "--docs", "300")
    llmctl("clean", "--input", d / "toy" / "corpus.jsonl", "--output", d / "clean", "--workers", "2")
    llmctl("dedup", "--input", d / "clean", "--output", d / "dedup", "--workers", "2")
    llmctl(
        "train-tokenizer",
        "--input",
        d / "dedup",
        "--output-dir",
        d / "tok",
        "--vocab-size",
        "600",
        "--type",
        "hf-bytelevel-bpe",
    )
    llmctl(
        "tokenize",
        "--input",
        d / "dedup",
        "--tokenizer",
        d / "tok",
        "--output-prefix",
        d / "bin" / "toy",
        "--workers",
        "2",
        "--val-ratio",
        "0.1",
    )
    assert "documents" in llmctl("inspect", d / "bin" / "toy_train", "--tokenizer", d / "tok")
    code = (
        f"from llmctl.data.gpt_dataset import build_gpt_dataset\n"
        f"ds = build_gpt_dataset({str(d / 'bin' / 'toy')!r}, seq_len=32, num_samples=50, split='val')\n"
        f"assert ds[3]['tokens'].shape == (33,)\n"
        f"import sys; assert 'torch' not in sys.modules or sys.modules['torch'] is None"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
