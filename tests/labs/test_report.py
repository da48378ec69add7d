"""`llmctl report` on real runs: two tiny pretraining runs (their JSONL logs, run records and checkpoints), a
real perplexity eval of one, a real `llmctl bench throughput` sweep. The report must carry every run's numbers
as the logs state them, each run's config as its run record holds it, the eval and ablation tables, and open
in a real browser (headless Chromium) with every image loaded. Bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from labs_helpers import read_jsonl, tiny_run, token_corpus
from llmctl.cli.main import build_cli
from real_data import under_ci


def invoke(*args) -> tuple[int, str, str]:
    res = CliRunner().invoke(build_cli(), [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    data = token_corpus(root / "data" / "corpus")
    tiny_run(root, "base", data)
    tiny_run(root, "lr1e-2", data, "train.lr=1e-2")
    code, _, err = invoke("eval", "run", "--task", "ppl", "--ckpt-dir", root / "base" / "ckpt", "--data-dir",
                          f"{data}_val", "--out-dir", root / "base" / "eval", "--device", "cpu")
    assert code == 0, err
    code, _, err = invoke("bench", "throughput", "-c", "tiny", "--sweep", "micro_batch=1,2", "--steps", "3",
                          "--set", f"data.path={data}", "--set", "data.seq_length=32", "--set", "model.vocab_size=256",
                          "--set", "model.max_seq_len=64", "--set", "train.global_batch_size=4",
                          "--set", "train.device=cpu", "--output", root / "bench")
    assert code == 0, err
    out = root / "report"
    code, stdout, err = invoke("report", root / "base", root / "lr1e-2", "--eval", root / "base" / "eval",
                               "--bench", root / "bench", "--out", out, "--title", "Lab 1 report")
    assert code == 0, err
    return root, out


def train_records(run: Path) -> list[dict]:
    return [r for r in read_jsonl(next((run / "logs").glob("*.jsonl"))) if "lr" in r and "event" not in r]


def expected_numbers(root: Path, name: str) -> list[str]:
    """What the runs table must say for one run, computed from its JSONL log as the lab defines it."""
    import statistics

    records = read_jsonl(root / name / "logs" / f"{name}.jsonl")
    train = [r for r in records if "lr" in r and "event" not in r]
    val = [r for r in records if "val_loss" in r][-1]["val_loss"]
    ms = statistics.median([r["step_ms"] for r in train[1:]])
    tokens_per_step = train[-1]["tokens_per_s"] * train[-1]["step_ms"] / 1000
    return [f"{train[-1]['loss']:.4f}", f"{val:.4f}", f"{ms:,.1f}", f"{tokens_per_step / (ms / 1000):,.0f}",
            f"{train[-1]['tokens']:,.0f}"]


def test_markdown_has_each_runs_numbers_config_eval_and_ablation(lab):
    root, out = lab
    md = (out / "report.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["ablation.png", "exp_loss.png", "grad_norm.png", "loss.png",
                                                     "lr.png", "quality.png", "report.html", "report.md",
                                                     "throughput.png"]
    rows: dict[str, str] = {}
    for line in md.splitlines():  # the runs table comes first; the eval table names its run again
        if line.startswith("| "):
            rows.setdefault(line.split("|")[1].strip(), line)
    for name in ("base", "lr1e-2"):
        assert all(n in rows[name] for n in expected_numbers(root, name)), (name, rows[name])
    # every image the markdown names is a PNG beside it
    for src in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # eval: the perplexity results.json says
    ppl = json.loads((root / "base" / "eval" / "results.json").read_text())["tasks"]["ppl"]["metrics"]["ppl"]
    assert f"| base | ppl | ppl {ppl:.4f}" in md  # labelled with the run whose checkpoint was evaluated
    # ablation: the sweep's rows in its own order, with the lab's formula
    sweep = json.loads((root / "bench" / "throughput.json").read_text())["rows"]
    assert [r["status"] for r in sweep] == ["ok", "ok"]
    for r in sweep:
        assert f"| {r['config']} | {r['tokens_per_step']:,} | {r['sec_per_step']:.4f} | {r['tokens_per_s']:,.0f} |" in md
    assert "TOKENS_PER_STEP / sec_per_step" in md
    # each run's config is its run record's, complete
    configs = re.findall(r"```yaml\n(.*?)```", md, re.S)
    for name, text in zip(("base", "lr1e-2"), configs):
        record = next(r["run"] for r in read_jsonl(root / name / "logs" / f"{name}.jsonl") if "run" in r)
        assert yaml.safe_load(text) == record["config"]
    assert yaml.safe_load(configs[1])["train"]["lr"] == 1e-2
    assert "| world_size | 1 |" in md and "| torch |" in md


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    reason = "headless Chromium not found (Debian: apt-get install chromium)"
    if under_ci():
        pytest.fail(f"{reason}; CI installs it (.ci/run)", pytrace=False)
    pytest.skip(reason)


def test_html_opens_in_headless_chromium_with_every_image_and_number(lab):
    root, out = lab
    browser_path = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if under_ci():
            pytest.fail("playwright not installed (requirements-test.txt)", pytrace=False)
        pytest.skip("playwright not installed (requirements-test.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth, e.naturalHeight])")
            text = page.inner_text("body")
            title = page.title()
        finally:
            browser.close()
    assert title == "Lab 1 report"
    assert sorted(src for src, *_ in images) == sorted(p.name for p in out.glob("*.png"))
    assert all(done and w > 100 and h > 100 for _, done, w, h in images), images
    for name in ("base", "lr1e-2"):
        assert all(n in text for n in expected_numbers(root, name)), name
    assert "ppl" in text and "micro_batch=1" in text and "micro_batch=2" in text


def test_a_megatron_text_log_reports_the_same_numbers(lab, tmp_path):
    """llmctl's .log is in Megatron's format: given the text log alone, the report reads the same curve and
    takes the config from the argument dump."""
    root, _ = lab
    code, _, err = invoke("report", root / "base" / "logs" / "base.log", "--out", tmp_path / "r")
    assert code == 0, err
    md = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| base |"))
    numbers = expected_numbers(root, "base")
    assert numbers[0] in row and numbers[1] in row and numbers[4] in row
    assert "config (argument dump in" in md and "seq_length: '32'" in md


def test_bad_input_is_one_line_and_writes_nothing(lab, tmp_path):
    root, _ = lab
    cases = [
        ((tmp_path / "nope",), f"run not found: {tmp_path / 'nope'}"),
        ((root / "data",), "no training log found"),
        ((root, ), "several training logs"),
        ((root / "base", "--eval", tmp_path), f"eval results not found: {tmp_path / 'results.json'}"),
        ((root / "base", "--bench", root / "base"), "throughput sweep not found"),
    ]
    for args, message in cases:
        code, out, err = invoke("report", *args, "--out", tmp_path / "r")
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, (args, err)
        assert not (tmp_path / "r").exists()
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    code, _, err = invoke("report", root / "base", "--eval", bad.parent, "--out", tmp_path / "r")
    assert code == 2 and f"{bad}: not valid JSON" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, _, err = invoke("report", root / "base", "--out", other)
    assert code == 2 and "is not a report folder" in err and (other / "keep.txt").read_text() == "mine"


def test_a_second_report_replaces_the_first_whole(lab, tmp_path):
    root, _ = lab
    out = tmp_path / "r"
    assert invoke("report", root / "base", root / "lr1e-2", "--out", out)[0] == 0
    assert (out / "quality.png").is_file()
    assert invoke("report", root / "base", "--out", out, "--token-threshold", "100")[0] == 0
    assert not (out / "quality.png").exists()  # one run: no model-quality ablation, nothing left over
    assert "exp(loss) after 100 tokens" in (out / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temp folders left beside it
    code, _, err = invoke("report", root / "base", "--out", out, "--token-threshold", "1e12")
    assert code == 2 and "lower --token-threshold" in err and (out / "report.md").is_file()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
