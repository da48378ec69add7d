"""Chinchilla approach-3 fit speed: the full fit plus 1000 bootstrap refits of 250 points on one CPU core.

    python benchmarks/scaling_fit_speed.py              # 250 points (10 budgets x 25 sizes), 1000 resamples
    python benchmarks/scaling_fit_speed.py --points 500 --boots 200

The points are a synthetic isoFLOP grid from the Chinchilla law (E=1.69, A=406.4, B=410.7, alpha=0.34,
beta=0.28) with 1% multiplicative noise, budgets 1e17..1e21 and model sizes 1/10..10x the optimum per budget.
The target is < 30 s for `fit` (full fit + 1000 resamples) with BLAS/OpenMP pinned to one thread; the ratio to
30 s is printed, together with the evidence that the speed was not bought by stopping early: each resample's
gradient norm is recomputed from its weights and counted against the converged threshold. This is a benchmark,
not a test: nothing asserts speed.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ[_v] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from llmctl.scaling import chinchilla as ch  # noqa: E402

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
TARGET_S = 30.0


def synthetic(points: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An isoFLOP grid of about `points` runs from the true law, loss times (1 + 1% gaussian noise)."""
    budgets = max(2, round(points / 25))
    per = max(3, points // budgets)
    law = ch.LawFit(**TRUE, objective=0.0, grad_norm=0.0, converged=True, n_points=0)
    C = np.geomspace(1e17, 1e21, budgets)
    n_opt, _ = law.optimal(C)
    N = (n_opt[:, None] * np.geomspace(0.1, 10.0, per)[None]).ravel()
    D = np.repeat(C, per) / (6 * N)
    L = law.loss(N, D) * (1 + 0.01 * np.random.default_rng(seed).standard_normal(N.size))
    return N, D, L


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=250)
    ap.add_argument("--boots", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    N, D, L = synthetic(args.points, args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    fit = ch.fit_approach3(N, D, L)
    t_fit = time.perf_counter() - t0
    samples = ch.bootstrap(N, D, L, n=args.boots, seed=args.seed, full_fit=fit)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    # The convergence check (not timed): rebuild each resample from its weights and take the gradient there.
    logs = np.log(N), np.log(D), np.log(L)
    W = ch.resample_weights(len(N), args.boots, args.seed)
    g = np.empty(args.boots)
    tol = np.empty(args.boots)
    for i in range(args.boots):
        theta = [
            np.log(samples["E"][i]),
            np.log(samples["A"][i]),
            np.log(samples["B"][i]),
            samples["alpha"][i],
            samples["beta"][i],
        ]
        g[i] = np.linalg.norm(ch.objective(theta, *logs, weights=W[i])[1])
        tol[i] = ch.grad_tolerance(logs[0], logs[1], W[i])
    ci = ch.intervals(samples)
    print(
        f"{len(N)} points, {args.boots} bootstraps, 1 thread: full fit {t_fit:.2f} s, "
        f"fit + bootstrap {elapsed:.2f} s wall, {cpu:.2f} s CPU (target < {TARGET_S:.0f} s, "
        f"ratio {elapsed / TARGET_S:.2f})"
    )
    print(
        f"full fit: alpha {fit.alpha:.4f} beta {fit.beta:.4f} E {fit.E:.4f}, grad norm {fit.grad_norm:.1e}, "
        f"converged {fit.converged}"
    )
    print(
        f"resamples converged: {np.mean(g <= tol):.1%} (median grad norm {np.median(g):.1e}, "
        f"max {g.max():.1e}); 80% CI alpha [{ci['alpha'][0]:.4f}, {ci['alpha'][1]:.4f}] "
        f"beta [{ci['beta'][0]:.4f}, {ci['beta'][1]:.4f}]"
    )


if __name__ == "__main__":
    main()
