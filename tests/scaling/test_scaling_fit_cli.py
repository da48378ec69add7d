"""`llmctl scaling fit` / `predict` on tables no llmctl run made (the published-data CSV format), and their bad
input: one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _law(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def _published_csv(path, seed=0, noise=0.01, benchmark=False):
    """A Chinchilla-shaped isoFLOP table (5 budgets x 5 sizes) with 1% noise, written as a person would."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.geomspace(1e18, 1e21, 5):
        al, be = TRUE["alpha"], TRUE["beta"]  # each profile centred on the law's own optimum
        n_opt = (al * TRUE["A"] / (be * TRUE["B"])) ** (1 / (al + be)) * (c / 6) ** (be / (al + be))
        for n in n_opt * np.geomspace(1 / 4, 4, 5):
            d = c / (6 * n)
            loss = _law(n, d) * (1 + noise * rng.standard_normal())
            row = {"params": f"{n:.6g}", "tokens": f"{d:.6g}", "flops": f"{c:.6g}", "loss": f"{loss:.6f}"}
            if benchmark:  # a benchmark that rises as the loss falls: 0.25 + 0.5 sigmoid(-8 (L - 2.4))
                row["mmlu"] = f"{0.25 + 0.5 / (1 + math.exp(8 * (loss - 2.4))):.4f}"
            rows.append(row)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_fit_published_csv(cli, tmp_path):
    src = _published_csv(tmp_path / "chinchilla.csv", benchmark=True)
    code, stdout, stderr = cli("scaling", "fit", src, "--bootstrap", "100", "--benchmark", "mmlu",
                               "--out-dir", tmp_path / "fit")
    assert code == 0, stderr
    doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
    law = doc["approach3"]["fit"]
    assert abs(law["alpha"] - TRUE["alpha"]) < 0.05 and abs(law["beta"] - TRUE["beta"]) < 0.05
    assert abs(law["E"] / TRUE["E"] - 1) < 0.05
    a, b = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), TRUE["alpha"] / (TRUE["alpha"] + TRUE["beta"])
    assert abs(doc["approach2"]["a"] - a) < 0.05 and abs(doc["approach2"]["b"] - b) < 0.05
    for p in TRUE:
        lo, hi = doc["approach3"]["intervals"][p]
        assert lo < law[p] < hi
    assert len(doc["data"]) == 25 and len(doc["approach3"]["residuals"]) == 25
    assert doc["benchmarks"]["mmlu"]["floor"] == 0.25
    for name in ("isoflop.png", "contours.png", "residuals.png", "benchmark_mmlu.png"):
        assert (tmp_path / "fit" / name).stat().st_size > 10_000
    assert "alpha" in stdout and "approach 2" in stdout and "benchmark mmlu" in stdout

    fit = tmp_path / "fit" / "fit.json"
    code, stdout, _ = cli("scaling", "predict", fit, "--params", "7e10", "--tokens", "1.4e12", "--json")
    got = json.loads(stdout)
    assert code == 0 and got["loss"] == pytest.approx(
        law["E"] + law["A"] / 7e10 ** law["alpha"] + law["B"] / 1.4e12 ** law["beta"])
    assert got["loss_interval"][0] < got["loss"] < got["loss_interval"][1]
    assert 0.25 <= got["benchmarks"]["mmlu"]["accuracy"] <= 0.75

    code, stdout, _ = cli("scaling", "predict", fit, "--budget", "5.76e23", "--json")
    opt = json.loads(stdout)
    assert code == 0 and opt["params"] * opt["tokens"] * 6 == pytest.approx(5.76e23)
    g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / (law["alpha"] + law["beta"]))
    assert opt["params"] == pytest.approx(g * (5.76e23 / 6) ** (law["beta"] / (law["alpha"] + law["beta"])))

    # the loss target: the budget found gives that loss on the frontier
    code, stdout, _ = cli("scaling", "predict", fit, "--target-loss", f"{opt['loss']:.6f}", "--json")
    assert code == 0 and json.loads(stdout)["budget"] == pytest.approx(5.76e23, rel=1e-3)

    # hardware: 64 GPUs x 30 days at 3000 tokens/s measured on a 5e8 model = that many FLOPs
    code, stdout, _ = cli("scaling", "predict", fit, "--gpus", "64", "--days", "30", "--tokens-per-s-per-gpu",
                          "3000", "--measured-params", "5e8", "--json")
    hw = json.loads(stdout)
    assert code == 0 and hw["budget"] == pytest.approx(64 * 30 * 86400 * 6 * 5e8 * 3000)
    # without the measured size the rate is the trained model's own: N * D * 6 = the hardware's FLOPs at N
    code, stdout, _ = cli("scaling", "predict", fit, "--gpus", "64", "--days", "30", "--tokens-per-s-per-gpu",
                          "3000", "--json")
    own = json.loads(stdout)
    assert code == 0 and own["budget"] == pytest.approx(64 * 30 * 86400 * 6 * own["params"] * 3000, rel=1e-6)


def test_predict_from_a_throughput_log(cli, tmp_path):
    src = _published_csv(tmp_path / "c.csv")
    assert cli("scaling", "fit", src, "--bootstrap", "0", "--no-plots")[0] == 0
    log = tmp_path / "run.jsonl"
    with open(log, "w") as f:
        for step in range(10, 60, 10):
            f.write(json.dumps({"step": step, "tokens": step * 4096, "tokens_per_step": 4096, "loss": 3.0,
                                "lr": 1e-4, "step_ms": 500.0, "tokens_per_s": 8192.0}) + "\n")
    code, stdout, stderr = cli("scaling", "predict", tmp_path / "fit.json", "--gpus", "8", "--days", "7",
                               "--throughput-log", log, "--log-gpus", "2", "--measured-params", "1e8", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["hardware"]["tokens_per_s_per_gpu"] == pytest.approx(4096 / 0.5 / 2)


def _bad_csv(tmp_path, rows, header=("params", "tokens", "loss")):
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD = [[1e8 * (i + 1), 1e9 * (6 - i), 3.0 - 0.1 * i] for i in range(6)]


@pytest.mark.parametrize("make, message", [
    (lambda p: _bad_csv(p, GOOD, header=("params", "tokens", "lossy")), "no 'loss' column"),
    (lambda p: _bad_csv(p, [*GOOD, [-1, 1e9, 3.0]]), "line 8: params must be a positive"),
    (lambda p: _bad_csv(p, [*GOOD, [1e8, 0, 3.0]]), "tokens must be a positive"),
    (lambda p: _bad_csv(p, [*GOOD, [1e8, 1e9, "x"]]), "loss 'x' is not a number"),
    (lambda p: _bad_csv(p, GOOD[:4]), "points"),
    (lambda p: p / "nothing.csv", "not found"),
])
def test_bad_fit_input(cli, tmp_path, make, message):
    src = make(tmp_path)
    out = tmp_path / "out"
    code, _, stderr = cli("scaling", "fit", src, "--bootstrap", "10", "--out-dir", out)
    assert code == 2 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert message in stderr, stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--params", "7e9"], "give exactly one of"),
    (["--budget", "1e20", "--params", "7e9", "--tokens", "1e12"], "give exactly one of"),
    (["--budget", "-1"], "--budget must be > 0"),
    (["--target-loss", "1.0"], "below the fitted irreducible loss"),
    (["--gpus", "8", "--days", "1"], "one of --tokens-per-s-per-gpu and --throughput-log"),
])
def test_bad_predict_input(cli, tmp_path, args, message):
    src = _published_csv(tmp_path / "c.csv")
    assert cli("scaling", "fit", src, "--bootstrap", "0", "--no-plots")[0] == 0
    code, _, stderr = cli("scaling", "predict", tmp_path / "fit.json", *args)
    assert code == 2 and message in stderr, stderr


def test_approach2_only_fit_predicts_the_optimum_not_losses(cli, tmp_path):
    src = _published_csv(tmp_path / "c.csv")
    assert cli("scaling", "fit", src, "--method", "approach2", "--no-plots")[0] == 0
    code, stdout, _ = cli("scaling", "predict", tmp_path / "fit.json", "--budget", "1e22", "--json")
    assert code == 0 and json.loads(stdout)["method"] == "approach2"
    code, _, stderr = cli("scaling", "predict", tmp_path / "fit.json", "--params", "1e9", "--tokens", "1e10")
    assert code == 2 and "no approach-3 law" in stderr


def test_lr_and_batch_laws_from_a_table(cli, tmp_path):
    """Runs varying the LR (and batch) within each budget: fit reads the optimum per budget and its power law in
    C (DeepSeek LLM's shape), and predict reports it for a planned budget."""
    rows = []
    for c in np.geomspace(1e17, 1e20, 4):
        lr_opt, batch_opt = 0.3 * c ** -0.125, 0.3 * c ** 0.33
        for n in np.geomspace(1e7, 1e8, 3) * (c / 1e17) ** 0.5:
            d = c / (6 * n)
            for lr in lr_opt * np.array([0.25, 0.5, 1, 2, 4]):
                for batch in batch_opt * np.array([0.5, 1, 2]):
                    loss = _law(n, d) + 0.02 * np.log(lr / lr_opt) ** 2 + 0.01 * np.log(batch / batch_opt) ** 2
                    rows.append({"params": n, "tokens": d, "flops": c, "budget": c, "lr": lr, "batch": batch,
                                 "loss": loss})
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, stdout, stderr = cli("scaling", "fit", path, "--bootstrap", "0", "--no-plots")
    assert code == 0, stderr
    doc = json.loads((tmp_path / "fit.json").read_text())
    assert doc["n_law_points"] == 12  # the best run of each (N, D) feeds the law
    assert doc["hparams"]["lr"]["law"]["exponent"] == pytest.approx(-0.125, abs=0.01)
    assert doc["hparams"]["batch"]["law"]["exponent"] == pytest.approx(0.33, abs=0.02)
    assert "optimal lr" in stdout and "optimal batch" in stdout
    code, stdout, _ = cli("scaling", "predict", tmp_path / "fit.json", "--budget", "1e21", "--json")
    assert json.loads(stdout)["hparams"]["lr"] == pytest.approx(0.3 * 1e21 ** -0.125, rel=0.1)


def test_plan_fit_predict_need_no_torch(tmp_path):
    """Fitting is numpy/scipy only: plan, fit and predict run with torch hidden (a data or laptop box)."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")])}
    src = _published_csv(tmp_path / "c.csv")
    for args in (["scaling", "plan", "-c", "tiny", "--set", "model.vocab_size=500", "--budgets", "1e10,2e10",
                  "--points", "3", "--tokens-per-param", "1", "--out", tmp_path / "grid.yaml"],
                 ["scaling", "fit", src, "--bootstrap", "20"],
                 ["scaling", "predict", tmp_path / "fit.json", "--budget", "1e22"]):
        res = subprocess.run([sys.executable, "-m", "llmctl.cli", *map(str, args)], env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, (args, res.stderr)
