#!/usr/bin/python3
"""Optuna TPE on the benchmark functions of bench/bench_search.cpp, for the side-by-side table.

Usage: /usr/bin/python3 bench/search_ref.py --seeds 20 --trials 100 --out ref.json
Writes, per function and seed, the regret (best value - known minimum) after each trial count in
--checkpoints, and the sampler's seconds per trial (wall time of the optimisation minus the objective's).
The functions and their domains are the same as the C++ ones (see bench_search.cpp).
"""
import argparse
import json
import math
import resource
import time

import numpy as np
import optuna

HARTMANN_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                       [17, 8, 0.05, 10, 0.1, 14]])
HARTMANN_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                              [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(x):
    x1, x2 = x
    b, c, r, s, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def hartmann6(x):
    x = np.asarray(x)
    inner = (HARTMANN_A * (x - HARTMANN_P) ** 2).sum(axis=1)
    return float(-(HARTMANN_ALPHA * np.exp(-inner)).sum())


def rosenbrock(x):
    return float(sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1)))


def quadratic(x):
    return float(sum((v - 0.3) ** 2 for v in x))


def styblinski_tang(x):
    return float(sum(v ** 4 - 16 * v ** 2 + 5 * v for v in x) / 2)


# name -> (function, bounds, known minimum, noise sd)
FUNCTIONS = {
    "branin": (branin, [(-5, 10), (0, 15)], 0.397887357729739, 0.0),
    "hartmann6": (hartmann6, [(0, 1)] * 6, -3.32236801141551, 0.0),
    "rosenbrock4": (rosenbrock, [(-2.048, 2.048)] * 4, 0.0, 0.0),
    "noisy_quadratic": (quadratic, [(-1, 1)] * 3, 0.0, 0.1),
    "styblinski_tang10": (styblinski_tang, [(-5, 5)] * 10, -39.1661657037714 * 10, 0.0),
}


def run(name, seed, trials, checkpoints):
    f, bounds, fmin, noise = FUNCTIONS[name]
    rng = np.random.RandomState(1000 + seed)
    truth = {}
    objective_s = 0.0

    def objective(trial):
        nonlocal objective_s
        x = [trial.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(bounds)]
        t0 = time.perf_counter()
        v = f(x)
        truth[trial.number] = v
        observed = v + (rng.normal(0, noise) if noise > 0 else 0.0)
        objective_s += time.perf_counter() - t0
        return observed

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    total = time.perf_counter() - t0
    # The regret of the trial with the best observed value (its noise-free value for the noisy function).
    out = {}
    for c in checkpoints:
        done = [t for t in study.trials if t.number < c and t.value is not None]
        best = min(done, key=lambda t: t.value)
        out[str(c)] = truth[best.number] - fmin
    return out, (total - objective_s) / trials


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--checkpoints", default="50,100")
    ap.add_argument("--only", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    checkpoints = [int(c) for c in a.checkpoints.split(",")]
    result = {"optuna_version": optuna.__version__, "functions": {}}
    for name in FUNCTIONS:
        if a.only and name not in a.only.split(","):
            continue
        regrets, secs = [], []
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            r, s = run(name, seed, a.trials, checkpoints)
            regrets.append(r)
            secs.append(s)
        result["functions"][name] = {"regret": regrets, "sampler_s_per_trial": secs}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open(a.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
