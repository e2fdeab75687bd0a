#!/usr/bin/python3
"""Tests of the study's seed-level rule (scripts/study_summary.py) itself.

Unit checks against values worked out by hand (the exact sign-flip p-value, Holm's adjustment,
Student's t in closed form for 1 and 2 degrees of freedom), then simulated studies at study v1's
noise levels with 8 seeds and 30 cases: under a true null the rule must say a wrong verdict at
most 5% of the time, per claim and over the family, and under a clear effect it must say
"holds". Monte Carlo rates are compared with a margin of 3 binomial standard errors at 5%
(0.015 for 2,000 studies), so a rule at twice its level fails while a sound one passes.

  study_stats_test.py <repository root>
"""
import math
import os
import sys
import time

import numpy as np

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(root, "scripts"))
import study_summary as s  # noqa: E402

STUDIES, SEEDS, CASES = 2000, 8, 30
MARGIN = 3 * math.sqrt(0.05 * 0.95 / STUDIES)
# The five claims of study v2 at study v1's noise: Dice, ECE, Dice, ECE, ECE (s.V1_NOISE).
METRICS = ["dice", "ece", "dice", "ece", "ece"]
# The boundary study's three band-ECE claims at 10 seeds, at the largest noise study v2's
# kits23-real record shows for them (kd against majority: seed sd 2.4, case sd 1.6 points).
BAND_NOISE = {"seed_sd": 0.024, "case_sd": 0.016}
BAND_SEEDS = 10
failures = []


def check(condition, message):
    print(("ok    " if condition else "FAIL  ") + message)
    if not condition:
        failures.append(message)


def unit_checks():
    # [1, 2, 3]: the 8 sign patterns give sums 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 for 2 of 8.
    check(s.sign_flip_exact_p([1, 2, 3]) == 2 / 8, f"sign flip [1,2,3]: {s.sign_flip_exact_p([1, 2, 3])} == 0.25")
    # [1, -2, 3]: observed |sum| 2; |sums| 6, 4, 2, 0, 0, 2, 4, 6 are >= 2 for 6 of 8.
    check(s.sign_flip_exact_p([1, -2, 3]) == 6 / 8, f"sign flip [1,-2,3]: {s.sign_flip_exact_p([1, -2, 3])} == 0.75")
    # 8 seeds all positive: only all-plus and all-minus reach the observed mean.
    check(s.sign_flip_exact_p(np.arange(1, 9)) == 2 / 256, "sign flip of 8 positive seeds == 2/256")
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    adjusted = s.holm([0.01, 0.04, 0.03, 0.005])
    check(np.allclose(adjusted, [0.03, 0.06, 0.06, 0.02]), f"holm {adjusted} == [0.03, 0.06, 0.06, 0.02]")
    check(s.holm_with_missing([0.01, None, 0.02]) == [0.02, None, 0.02], "holm skips a missing p-value")
    # Student's t in closed form: df 1 (Cauchy) p = 1 - 2 atan|t| / pi; df 2 p = 1 - |t| / sqrt(2 + t^2).
    for t in (0.1, 0.7, 1.5, 4.0, 30.0):
        p1, p2 = 1 - 2 * math.atan(t) / math.pi, 1 - t / math.sqrt(2 + t * t)
        check(abs(s.t_two_sided_p(t, 1) - p1) < 1e-12 and abs(s.t_two_sided_p(-t, 2) - p2) < 1e-12,
              f"t p-value at t={t}, df 1 and 2, to 1e-12")
    # Tabulated two-sided 5% critical values (df 4: 2.776445, df 6: 2.446912), to 1e-6.
    check(abs(s.t_two_sided_p(2.776445, 4) - 0.05) < 1e-6, "t critical value df 4")
    check(abs(s.t_two_sided_p(2.446912, 6) - 0.05) < 1e-6, "t critical value df 6")
    # Paired t of [1, 2, 3, 4, 5]: mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5)/sqrt(5)) = 4.2426, df 4.
    check(abs(s.paired_t_p([1, 2, 3, 4, 5]) - s.t_two_sided_p(3 / math.sqrt(0.5), 4)) < 1e-15, "paired t")
    check(s.seed_test([1, 2, 3, 4])[1] is None and s.seed_test([1] * 5)[0] == "paired t" and
          s.seed_test(list(range(8)))[0] == "exact sign-flip", "the test by the number of seeds")
    # The verdict rule on its branches.
    check(s.seed_verdict(0.02, 0.01, [0.01, 0.03], 0.01) == "holds", "verdict holds")
    check(s.seed_verdict(-0.02, 0.01, [-0.03, -0.01], 0.01) == "does not hold", "verdict opposite direction")
    check(s.seed_verdict(0.001, 0.5, [-0.002, 0.004], 0.01) == "does not hold", "verdict below smallest effect")
    check(s.seed_verdict(0.01, 0.5, [-0.01, 0.03], 0.01) == "cannot tell", "verdict cannot tell")
    check(s.seed_verdict(0.001, None, [-0.002, 0.004], 0.01) == "cannot tell", "verdict without a test")


def simulated_claims(rng, effects, resamples=None, metrics=None, noise=None, seeds=SEEDS):
    """One simulated study: its claims finished by the rule (Holm over the family), verdicts only;
    by default study v2's five claims at v1's noise, else `metrics` at `noise` (one for all)."""
    metrics = metrics or METRICS
    claims = []
    for metric, effect in zip(metrics, effects):
        d = s.simulate_case_differences(rng, seeds, CASES, effect=effect, **(noise or s.V1_NOISE[metric]))
        per_seed = d.mean(axis=1)
        test, p = s.seed_test(per_seed)
        interval = (s.hierarchical_bootstrap(list(d), rng, resamples) if resamples else None)
        claims.append({"effect": float(per_seed.mean()), "p_value": p, "ci95": interval,
                       "smallest_effect": s.SMALLEST_EFFECT[s.metric_kind(metric)]})
    for c, a in zip(claims, s.holm([c["p_value"] for c in claims])):
        c["verdict"] = s.seed_verdict(c["effect"], a, c["ci95"], c["smallest_effect"])
        c["significant"] = a < s.ALPHA
    return claims


def null_rates(rng):
    """Under a true null no claim may hold, nor fail significantly the other way."""
    wrong = np.zeros(len(METRICS))
    family = 0
    for _ in range(STUDIES):
        said = [c["significant"] for c in simulated_claims(rng, [0.0] * len(METRICS))]
        wrong += said
        family += any(said)
    rates = wrong / STUDIES
    for i, r in enumerate(rates):
        check(r <= 0.05 + MARGIN, f"null, claim {i + 1} ({METRICS[i]}): holds or significant does-not-hold "
                                  f"{r:.4f} <= 0.05")
    check(family / STUDIES <= 0.05 + MARGIN, f"null, family-wise with Holm: {family / STUDIES:.4f} <= 0.05")
    # Without Holm the same exact test must sit at its level (it is exact: at most 0.05 per claim).
    p = s.seed_test_p_many(s.V1_NOISE["ece"]["seed_sd"] * rng.standard_normal((STUDIES, SEEDS)))
    check(np.mean(p < 0.05) <= 0.05 + MARGIN, f"null, one exact test unadjusted: {np.mean(p < 0.05):.4f} <= 0.05")


def band_null_rates(rng):
    """The boundary study's family (three band-ECE claims, 10 seeds) under a true null."""
    metrics = ["band_ece"] * 3
    said = np.array([[c["significant"] for c in simulated_claims(rng, [0.0] * 3, metrics=metrics, noise=BAND_NOISE,
                                                                 seeds=BAND_SEEDS)] for _ in range(STUDIES)])
    for i, r in enumerate(said.mean(axis=0)):
        check(r <= 0.05 + MARGIN, f"null, boundary claim B{i + 1}: holds or significant does-not-hold {r:.4f} <= 0.05")
    family = said.any(axis=1).mean()
    check(family <= 0.05 + MARGIN, f"null, boundary family-wise with Holm: {family:.4f} <= 0.05")


def boundary_rate(rng):
    """At a true improvement equal to the smallest effect, 'does not hold' is the wrong verdict."""
    for metric in ("dice", "ece"):
        wrong = 0
        studies = STUDIES // 4
        for _ in range(studies):
            d = s.simulate_case_differences(rng, SEEDS, CASES, effect=s.SMALLEST_EFFECT[metric],
                                            **s.V1_NOISE[metric])
            interval = s.hierarchical_bootstrap(list(d), rng, 1000)
            wrong += interval[1] < s.SMALLEST_EFFECT[metric]
        margin = 3 * math.sqrt(0.05 * 0.95 / studies)
        check(wrong / studies <= 0.05 + margin,
              f"true effect = smallest effect ({metric}): 'does not hold' {wrong / studies:.4f} <= 0.05")


def power_checks(rng):
    """A clear effect (3 seed-level sd) in claim 1, nulls elsewhere: the rule says holds."""
    noise = s.V1_NOISE["dice"]
    effect = 3 * math.hypot(noise["seed_sd"], noise["case_sd"] / math.sqrt(CASES))
    holds = np.mean([simulated_claims(rng, [effect, 0, 0, 0, 0])[0]["verdict"] == "holds" for _ in range(STUDIES)])
    check(holds >= 0.9, f"clear Dice effect {effect:.4f}: holds {holds:.3f} >= 0.9")
    # power() at alpha/m is a lower bound of the rule's rate with Holm.
    sd = math.hypot(noise["seed_sd"], noise["case_sd"] / math.sqrt(CASES))
    bound = s.power(effect, sd, SEEDS, s.ALPHA / len(METRICS), rng)
    check(bound <= holds + MARGIN and bound >= 0.8, f"power() {bound:.3f} is a lower bound of {holds:.3f}")
    check(s.power(0.0, sd, SEEDS, s.ALPHA / len(METRICS), rng) <= 0.05, "power() at no effect <= 0.05")


def report_check(rng):
    """study_v2 on a small report: effects from the per-case values, Holm and verdicts by the rule."""
    cases = [f"case{i}" for i in range(6)]
    models = []
    for seed in range(SEEDS):
        for row, shift in (("majority", 0.0), ("mean", 0.02 + 0.001 * seed)):
            values = rng.uniform(0.7, 0.9, len(cases))
            models.append({"name": f"{row}-s{seed}", "cases": [
                {"id": c, "dice": {"target": 0.5 + shift + 0.001 * k}, "ece": 0.05 - shift / 10 + v / 100}
                for k, (c, v) in enumerate(zip(cases, values))]})
    report = {"regions": ["target"], "models": models}
    out = s.study_v2(report, ["majority", "mean"], [str(i) for i in range(SEEDS)], s.CLAIMS_V2, rng)
    claims = {c["key"]: c for c in out["claims"]}
    c1 = claims["C1"]
    check(abs(c1["effect"] - np.mean([0.02 + 0.001 * i for i in range(SEEDS)])) < 1e-12, "C1 effect by hand")
    check(c1["p_value"] == 2 / 256 and c1["verdict"] == "holds", f"C1 p {c1['p_value']} and verdict holds")
    check(c1["p_holm"] == min(1, 2 * c1["p_value"]) or c1["p_holm"] >= c1["p_value"], "C1 Holm over run claims")
    check(all(claims[k]["verdict"] == "not run" for k in ("C3", "C4", "C5")), "claims without rows: not run")
    check(c1["ci95"][0] <= c1["effect"] <= c1["ci95"][1], "C1 interval holds the effect")


if __name__ == "__main__":
    start = time.time()
    rng = np.random.default_rng(20261207)
    unit_checks()
    null_rates(rng)
    band_null_rates(rng)
    boundary_rate(rng)
    power_checks(rng)
    report_check(rng)
    print(f"{time.time() - start:.1f} s")
    if failures:
        print(f"{len(failures)} failed")
        sys.exit(1)
