#!/usr/bin/python3
"""The study's summary (scripts/study.sh): study.json and study.md from kdseg reports.

Models are named <row>-s<seed>; every row of one seed trains from the same initialisation and data
order, so a row and its reference are paired by seed. The replicate is the training seed: a
claim's evidence is, per seed, the row's improvement over the reference averaged over the
evaluation cases (higher Dice, lower ECE), one number a seed (the seed-level rule, study v2):
  p-value     exact sign-flip test over all 2^n sign patterns with 8 or more seeds, a paired
              t-test with 5-7 seeds; fewer than 5 seeds give no p-value and always "cannot tell"
  adjustment  Holm over the pre-registered claims (the family), at alpha 0.05
  interval    95% hierarchical bootstrap of the mean improvement: seeds resampled, then the
              cases within each resampled seed; its percentiles expanded for the few seeds
              (a plain percentile interval over 8 seeds missed on one side 5.8% of the time
              in tests/tools/study_stats_test.py's simulation, where 2.5% is due)
  holds          adjusted p < 0.05 and the mean improvement > 0 (the claimed direction)
  does not hold  adjusted p < 0.05 and the mean improvement < 0, or the interval's upper end
                 lies below the smallest effect of interest (Dice 0.01, ECE 0.005 = 0.5 points)
  cannot tell    otherwise
with the power: the probability that this rule says "holds" when the true improvement is the
observed one, the seed-level sd the observed one and the seeds as many, simulated at alpha/m
(Bonferroni over the m claims, a lower bound of Holm's power).
Rows named like "mean-ts" are other models of the report (e.g. after temperature scaling).

  study_summary.py report.json [more.json ...] --rows "majority mean ..." --seeds "0 1 ..." --out DIR
      [--claims claims.json] [--rule v2|v1]
  study_summary.py --from-seed-differences differences.json --out DIR   (only per-seed numbers known)
  study_summary.py --simulate-v1-null [--studies N]   (false-verdict rates of the v1 rules)

Study v1's rule (--rule v1, kept so that its table can be recomputed):

Models are named <row>-s<seed>. For each row, a case's Dice (the report's first region) and ECE
are averaged over the seeds; the row's value is the mean over cases with a 95% percentile
bootstrap interval, and its spread the standard deviation over seeds of the per-seed means.
Each claim of the paper is a paired comparison over cases of seed-averaged values against the
majority-vote row (improvement: higher Dice, lower ECE), with a bootstrap interval of the mean
difference and a sign-flip permutation p-value, Holm-adjusted over every comparison here, and
the improvement within each seed (the rows' runs of one seed share initialisation and data order):
  holds          the interval lies above 0, the adjusted p < 0.05 and every seed improves
  does not hold  the interval lies below 0, the adjusted p < 0.05 and every seed is worse
  cannot tell    otherwise: the cases cannot tell the rows apart, or the seeds disagree (the
                 difference is smaller than what the training seed changes)
A row the study did not run gives "not run".

  study_summary.py report.json --rows "majority mean ..." --seeds "0 1 2" --out DIR --rule v1
"""
import argparse
import gzip
import json
import math

import numpy as np

RESAMPLES = 2000
PERMUTATIONS = 20000
ALPHA = 0.05
# (key, claim, row, reference row, metrics): the paper's claims, then one beyond it.
CLAIMS = [
    ("soft_dice", "soft labels (rater mean) beat hard labels (majority vote) in Dice", "mean", "majority", ["dice"]),
    ("soft_ece", "soft labels (rater mean) beat hard labels (majority vote) in ECE", "mean", "majority", ["ece"]),
    ("kd_both", "knowledge distillation beats hard labels (majority vote) in Dice and ECE", "kd", "majority",
     ["dice", "ece"]),
    ("calibrated_kd_ece", "a teacher calibrated before caching lowers the distilled student's ECE", "kd-cal", "kd",
     ["ece"]),
]



def load_report(path):
    """A kdseg report.json, or the same gzipped (report.json.gz, as docs/study/ keeps them)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)

def model_of(report, name):
    """The report's model called `name`, or None."""
    return next((m for m in report["models"] if m["name"] == name), None)


def per_case(report, name, metric, region):
    """{case id: value} of one model, NaN cases left out."""
    model = model_of(report, name)
    out = {}
    for case in model["cases"]:
        value = case["dice"][region] if metric == "dice" else case[metric]  # ece, band_ece, ace, ...
        if value is not None:
            out[case["id"]] = value
    return out


def seed_averaged(report, row, seeds, metric, region):
    """{case id: mean over seeds} over the cases every seed has, and the per-seed means."""
    runs = [per_case(report, f"{row}-s{seed}", metric, region) for seed in seeds]
    cases = sorted(set.intersection(*(set(r) for r in runs)))
    return {c: float(np.mean([r[c] for r in runs])) for c in cases}, [float(np.mean(list(r.values()))) for r in runs]


def bootstrap_interval(values, rng):
    values = np.asarray(values)
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def sign_flip_p(differences, rng):
    """Two-sided p of the mean difference under random sign flips (the null: no difference)."""
    d = np.asarray(differences)
    observed = abs(d.mean())
    signs = rng.choice([-1.0, 1.0], size=(PERMUTATIONS, len(d)))
    return float((np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-15) + 1) / (PERMUTATIONS + 1))


def holm(p_values):
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict_v1_preregistered(test):
    """Study v1's rule as fixed before its run: interval and Holm-adjusted p over the cases."""
    if test["ci95"][0] > 0 and test["p_holm"] < ALPHA:
        return "holds"
    if test["ci95"][1] < 0 and test["p_holm"] < ALPHA:
        return "does not hold"
    return "cannot tell"


def verdict(test):
    """Study v1's rule as patched after its run: also every seed in the same direction."""
    seeds = test["seed_improvements"]
    if test["ci95"][0] > 0 and test["p_holm"] < ALPHA and all(d > 0 for d in seeds):
        return "holds"
    if test["ci95"][1] < 0 and test["p_holm"] < ALPHA and all(d < 0 for d in seeds):
        return "does not hold"
    return "cannot tell"


def seed_improvements(report, row, reference, seeds, metric, region, sign):
    """Per seed, the mean over the cases both runs have of the improvement of row over reference."""
    out = []
    for seed in seeds:
        a = per_case(report, f"{row}-s{seed}", metric, region)
        b = per_case(report, f"{reference}-s{seed}", metric, region)
        out.append(float(np.mean([sign * (a[c] - b[c]) for c in sorted(set(a) & set(b))])))
    return out


def main_v1(args):
    report = load_report(args.report[0])
    rows, seeds = args.rows.split(), args.seeds.split()
    region = report["regions"][0]
    rng = np.random.default_rng(0)

    table = {}
    for row in rows:
        entry = {}
        for metric in ("dice", "ece"):
            values, seed_means = seed_averaged(report, row, seeds, metric, region)
            entry[metric] = {"mean": float(np.mean(list(values.values()))),
                             "ci95": bootstrap_interval(list(values.values()), rng),
                             "cases": len(values), "seed_means": seed_means,
                             "seed_sd": float(np.std(seed_means, ddof=1)) if len(seeds) > 1 else 0.0}
        table[row] = entry

    tests = []  # every paired comparison, for Holm's adjustment
    claims = []
    for key, text, row, reference, metrics in CLAIMS:
        claim = {"key": key, "claim": text, "row": row, "reference": reference, "tests": {}}
        if row not in rows or reference not in rows:
            claim["verdict"] = "not run"
            claims.append(claim)
            continue
        for metric in metrics:
            a, _ = seed_averaged(report, row, seeds, metric, region)
            b, _ = seed_averaged(report, reference, seeds, metric, region)
            cases = sorted(set(a) & set(b))
            sign = 1.0 if metric == "dice" else -1.0  # improvement: higher Dice, lower ECE
            differences = [sign * (a[c] - b[c]) for c in cases]
            test = {"metric": metric, "improvement": "higher" if metric == "dice" else "lower", "cases": len(cases),
                    "row_mean": float(np.mean([a[c] for c in cases])),
                    "reference_mean": float(np.mean([b[c] for c in cases])),
                    "mean_improvement": float(np.mean(differences)),
                    "ci95": bootstrap_interval(differences, rng), "p_value": sign_flip_p(differences, rng),
                    "seed_improvements": seed_improvements(report, row, reference, seeds, metric, region, sign)}
            claim["tests"][metric] = test
            tests.append(test)
        claims.append(claim)
    for test, adjusted in zip(tests, holm([t["p_value"] for t in tests])):
        test["p_holm"] = adjusted
    for claim in claims:
        if claim.get("verdict") == "not run":
            continue
        verdicts = [verdict(t) for t in claim["tests"].values()]
        for t, v in zip(claim["tests"].values(), verdicts):
            t["verdict"] = v
        claim["verdict"] = ("does not hold" if "does not hold" in verdicts else
                            "holds" if all(v == "holds" for v in verdicts) else "cannot tell")

    summary = {"report": args.report[0], "region": region, "seeds": seeds, "rows": table, "claims": claims,
               "rule": {"alpha": ALPHA, "bootstrap_resamples": RESAMPLES, "permutations": PERMUTATIONS,
                        "adjustment": "holm over every test of the claims"}}
    with open(f"{args.out}/study.json", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with open(f"{args.out}/study.md", "w") as f:
        f.write(markdown(summary))
    print(markdown(summary))


def fmt(value, digits=3):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_p(p):
    return "< 0.0001" if p < 1e-4 else fmt(p, 4)


def markdown(s):
    n = next(iter(s["rows"].values()))["dice"]["cases"] if s["rows"] else 0
    lines = [f"Study: {s['region']} Dice and ECE on {n} evaluation cases, mean over cases of the seed-averaged "
             f"values [95% bootstrap interval], and the standard deviation over seeds {', '.join(s['seeds'])}.", "",
             "| row | Dice | Dice sd (seeds) | ECE | ECE sd (seeds) |", "|---|---|---|---|---|"]
    for row, e in s["rows"].items():
        d, c = e["dice"], e["ece"]
        lines.append(f"| {row} | {fmt(d['mean'])} [{fmt(d['ci95'][0])}, {fmt(d['ci95'][1])}] | {fmt(d['seed_sd'])} | "
                     f"{fmt(c['mean'], 4)} [{fmt(c['ci95'][0], 4)}, {fmt(c['ci95'][1], 4)}] | {fmt(c['seed_sd'], 4)} |")
    lines += ["", "| claim | verdict | evidence (improvement over the reference, paired over cases) |", "|---|---|---|"]
    for claim in s["claims"]:
        evidence = "; ".join(
            f"{m} {fmt(t['row_mean'], 4)} vs {fmt(t['reference_mean'], 4)}: {fmt(t['mean_improvement'], 4)} "
            f"[{fmt(t['ci95'][0], 4)}, {fmt(t['ci95'][1], 4)}], p {fmt_p(t['p_value'])} (Holm {fmt_p(t['p_holm'])}), "
            f"per seed {', '.join(fmt(d, 4) for d in t['seed_improvements'])}"
            for m, t in claim["tests"].items()) or "–"
        lines.append(f"| {claim['claim']} ({claim['row']} vs {claim['reference']}) | **{claim['verdict']}** | "
                     f"{evidence} |")
    return "\n".join(lines) + "\n"


# --- the seed-level rule (study v2) -------------------------------------------------------------

MIN_SEEDS_T, MIN_SEEDS_EXACT = 5, 8
# The smallest improvement worth having, fixed with study v2's pre-registration: one Dice point,
# half an ECE percentage point.
SMALLEST_EFFECT = {"dice": 0.01, "ece": 0.005}
POWER_SIMULATIONS = 2000
# (key, claim, row, reference, metric): study v2's pre-registered claims, the Holm family.
CLAIMS_V2 = [
    ("C1", "soft labels (rater mean) beat hard labels (majority vote) in Dice", "mean", "majority", "dice"),
    ("C2", "soft labels (rater mean) beat hard labels (majority vote) in ECE", "mean", "majority", "ece"),
    ("C3", "knowledge distillation beats hard labels (majority vote) in Dice", "kd", "majority", "dice"),
    ("C4", "a teacher calibrated before caching lowers the distilled student's ECE", "kd-cal", "kd", "ece"),
    ("C5", "soft labels (rater mean) beat hard labels in ECE after temperature scaling of both", "mean-ts",
     "majority-ts", "ece"),
]
# Secondary comparisons, outside the family: reported with the same statistics, no verdict.
SECONDARY_V2 = [(f"S-{row}-{metric}", f"{row} against the majority vote in {metric}", row, "majority", metric)
                for row in ("weighted", "ls", "random") for metric in ("dice", "ece")]


def metric_kind(metric):
    """'dice' or 'ece': which smallest effect and direction a metric takes."""
    return "dice" if metric.startswith("dice") else "ece"


def improvement_sign(metric):
    return 1.0 if metric_kind(metric) == "dice" else -1.0  # higher Dice, lower ECE


def paired_case_differences(report, row, reference, seeds, metric, region):
    """Per seed, the array of per-case improvements of row over reference on the cases both have."""
    sign, out = improvement_sign(metric), []
    for seed in seeds:
        a = per_case(report, f"{row}-s{seed}", metric, region)
        b = per_case(report, f"{reference}-s{seed}", metric, region)
        cases = sorted(set(a) & set(b))
        if not cases:
            raise ValueError(f"{row}-s{seed} and {reference}-s{seed}: no case with a {metric} value in both")
        out.append(np.array([sign * (a[c] - b[c]) for c in cases]))
    return out


def sign_flip_exact_p(d):
    """Two-sided p of the mean under all 2^n sign patterns (the null: each seed's sign is a coin)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    patterns = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
    means = np.abs(patterns @ d) / n
    observed = abs(d.mean())
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def _beta_continued_fraction(a, b, x):
    """The continued fraction of the regularized incomplete beta (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def regularized_incomplete_beta(a, b, x):
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    """P(|T| >= |t|) for Student's t with df degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if not math.isfinite(t):
        return 0.0
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def paired_t_p(d):
    d = np.asarray(d, dtype=float)
    sd = float(np.std(d, ddof=1))
    if sd == 0.0:
        return 0.0 if d.mean() != 0.0 else 1.0
    return t_two_sided_p(float(d.mean()) / (sd / math.sqrt(len(d))), len(d) - 1)


def seed_test(d):
    """(test name, two-sided p) of the per-seed improvements d; p None with fewer than 5 seeds."""
    if len(d) >= MIN_SEEDS_EXACT:
        return "exact sign-flip", sign_flip_exact_p(d)
    if len(d) >= MIN_SEEDS_T:
        return "paired t", paired_t_p(d)
    return "too few seeds", None


def holm_with_missing(p_values):
    """Holm over the p-values that exist; None stays None."""
    present = [i for i, p in enumerate(p_values) if p is not None]
    adjusted = holm([p_values[i] for i in present])
    out = [None] * len(p_values)
    for i, a in zip(present, adjusted):
        out[i] = a
    return out


def t_quantile(q, df):
    """The q quantile (q > 0.5) of Student's t, by bisection of t_two_sided_p."""
    low, high = 0.0, 1e6
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided_p(mid, df) > 2 * (1 - q) else (low, mid)
    return (low + high) / 2


def expanded_tail(seeds):
    """The tail probability of the expanded percentile interval (Hesterberg 2015, 'What teachers
    should know about the bootstrap'): z at sqrt(n/(n-1)) t_{n-1, 0.975}, so that a bootstrap over
    few seeds, whose spread is too narrow by (n-1)/n and normal where t is due, keeps 95%."""
    if seeds < 2:
        return 0.025
    z = math.sqrt(seeds / (seeds - 1)) * t_quantile(0.975, seeds - 1)
    return 0.5 * math.erfc(z / math.sqrt(2))


def hierarchical_bootstrap(case_differences, rng, resamples=RESAMPLES):
    """95% interval of the mean improvement: seeds resampled, then each resampled seed's cases, the
    percentiles expanded for the number of seeds (expanded_tail: 0.57% and 99.43% with 8 seeds).

    case_differences: one array of per-case improvements per seed (lengths may differ)."""
    n = len(case_differences)
    seeds = rng.integers(0, n, size=(resamples, n))
    means = np.empty((resamples, n))
    for s, d in enumerate(case_differences):
        rows, cols = np.nonzero(seeds == s)
        if len(rows):
            picks = rng.integers(0, len(d), size=(len(rows), len(d)))
            means[rows, cols] = d[picks].mean(axis=1)
    totals = means.mean(axis=1)
    tail = 100 * expanded_tail(n)
    return [float(np.percentile(totals, tail)), float(np.percentile(totals, 100 - tail))]


def seed_verdict(effect, p_adjusted, interval, smallest_effect):
    """The seed-level rule; effect and interval are improvements (positive: the claimed direction).
    No p-value (fewer than 5 seeds) gives "cannot tell": the interval cannot see the seeds' spread."""
    if p_adjusted is None:
        return "cannot tell"
    if p_adjusted < ALPHA and effect > 0:
        return "holds"
    if p_adjusted < ALPHA and effect < 0:
        return "does not hold"
    if interval is not None and interval[1] < smallest_effect:
        return "does not hold"
    return "cannot tell"


def seed_test_p_many(d):
    """seed_test's p for each row of d [studies, seeds], vectorised (the simulations)."""
    d = np.asarray(d, dtype=float)
    studies, n = d.shape
    if n >= MIN_SEEDS_EXACT:
        patterns = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
        means = np.abs(d @ patterns.T) / n
        observed = np.abs(d.mean(axis=1, keepdims=True))
        return np.mean(means >= observed - 1e-12 * np.maximum(1.0, observed), axis=1)
    if n >= MIN_SEEDS_T:
        return np.array([paired_t_p(row) for row in d])
    return np.full(studies, np.nan)


def power(effect, sd, seeds, alpha, rng, simulations=POWER_SIMULATIONS):
    """P(the rule says holds) at true improvement effect, seed-level sd, this many seeds, level alpha."""
    if seeds < MIN_SEEDS_T or not (sd > 0) or not math.isfinite(effect):
        return None
    d = effect + sd * rng.standard_normal((simulations, seeds))
    p = seed_test_p_many(d)
    return float(np.mean((p < alpha) & (d.mean(axis=1) > 0)))


def seed_claim(key, text, row, reference, metric, case_differences, rng):
    """One claim's evidence before the adjustment: effect, per-seed values, test, interval."""
    per_seed = [float(np.mean(d)) for d in case_differences]
    test, p = seed_test(per_seed)
    kind = metric_kind(metric)
    return {"key": key, "claim": text, "row": row, "reference": reference, "metric": metric,
            "improvement": "higher" if kind == "dice" else "lower", "seeds": len(per_seed),
            "effect": float(np.mean(per_seed)), "seed_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1
            else None, "per_seed": per_seed, "test": test, "p_value": p,
            "ci95": hierarchical_bootstrap(case_differences, rng) if case_differences else None,
            "smallest_effect": SMALLEST_EFFECT[kind]}


def finish_claims(claims, rng):
    """Holm over the family, verdicts and power, in place."""
    for claim, adjusted in zip(claims, holm_with_missing([c["p_value"] for c in claims])):
        claim["p_holm"] = adjusted
        claim["verdict"] = seed_verdict(claim["effect"], adjusted, claim["ci95"], claim["smallest_effect"])
        claim["power"] = (power(claim["effect"], claim["seed_sd"], claim["seeds"], ALPHA / len(claims), rng)
                          if claim["seed_sd"] is not None else None)
    return claims


def load_reports(paths):
    """The models of every report as one report (the first one's regions)."""
    reports = [load_report(p) for p in paths]
    merged = {"regions": reports[0]["regions"], "models": []}
    for r in reports:
        merged["models"] += r["models"]
    return merged


# The per-case metrics a claim may name: one number per case, higher better for Dice and lower
# for the calibration errors (improvement_sign, SMALLEST_EFFECT by metric_kind).
CLAIM_METRICS = ("dice", "ece", "band_ece", "ace", "mce", "classwise_ece", "slice_ece")
# A claims file's entries: these fields, in the order of CLAIMS_V2's tuples.
CLAIM_FIELDS = ("key", "claim", "row", "reference", "metric")


def load_claims(path):
    if path is None:
        return CLAIMS_V2
    claims = json.load(open(path))
    if not isinstance(claims, list) or not claims:
        raise SystemExit(f"{path}: not a JSON list of claims")
    for i, c in enumerate(claims):
        missing = [k for k in CLAIM_FIELDS if k not in c]
        if missing:
            raise SystemExit(f"{path}: claim {i + 1} lacks {', '.join(missing)}")
        if c["metric"] not in CLAIM_METRICS:
            raise SystemExit(f"{path}: claim {c['key']}: metric '{c['metric']}' is not one of {', '.join(CLAIM_METRICS)}")
    return [tuple(c[k] for k in CLAIM_FIELDS) for c in claims]


def has_model(report, name):
    return model_of(report, name) is not None


def study_v2(report, rows, seeds, claims_list, rng):
    region = report["regions"][0]
    table = {}
    # Dice and ECE, and any other metric a claim names (a calibration metric of the report's cases).
    metrics = ["dice", "ece"] + list(dict.fromkeys(c[4] for c in claims_list if c[4] not in ("dice", "ece")))
    for row in rows:
        table[row] = {}
        for metric in metrics:
            seed_means = [float(np.mean(list(per_case(report, f"{row}-s{s}", metric, region).values())))
                          for s in seeds if has_model(report, f"{row}-s{s}")]
            table[row][metric] = {"mean": float(np.mean(seed_means)), "seed_means": seed_means,
                                  "seed_sd": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None}
    claims, not_run = [], []
    for key, text, row, reference, metric in claims_list:
        if not all(has_model(report, f"{r}-s{s}") for r in (row, reference) for s in seeds):
            not_run.append({"key": key, "claim": text, "row": row, "reference": reference, "metric": metric,
                            "verdict": "not run"})
            continue
        differences = paired_case_differences(report, row, reference, seeds, metric, region)
        claims.append(seed_claim(key, text, row, reference, metric, differences, rng))
    finish_claims(claims, rng)
    secondary = []
    for key, text, row, reference, metric in SECONDARY_V2:
        run = [s for s in seeds if has_model(report, f"{row}-s{s}") and has_model(report, f"{reference}-s{s}")]
        if run:
            differences = paired_case_differences(report, row, reference, run, metric, region)
            secondary.append(seed_claim(key, text, row, reference, metric, differences, rng) | {"verdict": "secondary"})
    return {"region": region, "seeds": seeds, "rows": table, "claims": claims + not_run, "secondary": secondary}


# The table of every row before and after temperature scaling (descriptive, no verdicts): each
# metric from the report's per-model summary, averaged over the seeds both versions have.
TS_METRICS = [
    ("ece", "ECE %", 100.0, 2, lambda s: s["ece"]["mean"]),
    ("nll", "NLL", 1.0, 4, lambda s: s["nll"]),
    ("band_ece", "band ECE %", 100.0, 2, lambda s: s["band_ece"]["mean"]),
    ("ace", "ACE %", 100.0, 1, lambda s: s["ace"]),
    ("rater_ece", "rater ECE %", 100.0, 2, lambda s: s["soft_reference"]["rater_ece"]["mean"]),
]


def model_summary(report, name):
    return model_of(report, name)["summary"]


def temperature_scaling(report, rows, seeds):
    """{row: {"seeds": n, metric: {"before", "after"}}} for every row whose "<row>-ts" models exist;
    a metric that is missing (null) for some model is null."""
    out = {}
    for row in rows:
        if row.endswith("-ts"):
            continue
        both = [s for s in seeds if has_model(report, f"{row}-s{s}") and has_model(report, f"{row}-ts-s{s}")]
        if not both:
            continue
        entry = {"seeds": len(both)}
        for key, _, _, _, get in TS_METRICS:
            pair = {}
            for when, name in (("before", row), ("after", f"{row}-ts")):
                values = [get(model_summary(report, f"{name}-s{s}")) for s in both]
                pair[when] = None if any(v is None for v in values) else float(np.mean(values))
            entry[key] = pair
        out[row] = entry
    return out


def markdown_temperature_scaling(table):
    if not table:
        return ""
    head = "| row | seeds | " + " | ".join(f"{label} before | after" for _, label, _, _, _ in TS_METRICS) + " |"
    lines = ["", "Every row before and after temperature scaling on the calibration fold (means over seeds; "
             "Dice does not change with a temperature; null: the metric is missing):", "", head,
             "|" + "---|" * (2 + 2 * len(TS_METRICS))]
    for row, e in table.items():
        cells = []
        for key, _, k, digits, _ in TS_METRICS:
            for when in ("before", "after"):
                v = e[key][when]
                cells.append("null" if v is None else f"{v * k:.{digits}f}")
        lines.append(f"| {row} | {e['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def study_from_seed_differences(spec, rng):
    """Only per-seed improvements known (no per-case values): no interval, the rest as study_v2.

    spec: {"source", "seeds", "claims": [{key, claim, row, reference, metric, per_seed_improvement}]}."""
    claims = []
    for c in spec["claims"]:
        per_seed = [float(v) for v in c["per_seed_improvement"]]
        test, p = seed_test(per_seed)
        kind = metric_kind(c["metric"])
        claims.append({"key": c["key"], "claim": c["claim"], "row": c["row"], "reference": c["reference"],
                       "metric": c["metric"], "improvement": "higher" if kind == "dice" else "lower",
                       "seeds": len(per_seed), "effect": float(np.mean(per_seed)),
                       "seed_sd": float(np.std(per_seed, ddof=1)), "per_seed": per_seed, "test": test,
                       "p_value": p, "ci95": None, "smallest_effect": SMALLEST_EFFECT[kind],
                       # Beside the rule, which has no test below 5 seeds: the paired t-test anyway.
                       "p_t_informative": paired_t_p(per_seed)})
    finish_claims(claims, rng)
    for claim, adjusted in zip(claims, holm([c["p_t_informative"] for c in claims])):
        claim["p_t_informative_holm"] = adjusted
    return {"source": spec.get("source"), "seeds": spec.get("seeds"), "rows": {}, "claims": claims}


def rule_v2():
    return {"unit": "training seed", "alpha": ALPHA, "exact_sign_flip_from_seeds": MIN_SEEDS_EXACT,
            "paired_t_from_seeds": MIN_SEEDS_T, "adjustment": "holm over the claims",
            "interval": f"95% hierarchical bootstrap (seeds, then cases), {RESAMPLES} resamples, expanded percentiles",
            "smallest_effect": SMALLEST_EFFECT,
            "power": f"simulated, {POWER_SIMULATIONS} studies, normal seed-level improvements, level alpha/m"}


def fmt_any(value, digits=4):
    return "–" if value is None else fmt_p(value) if digits == "p" else fmt(value, digits)


def markdown_v2(s):
    def scale(metric):  # ECE in percentage points
        return (100.0, 2, " pt") if metric_kind(metric) == "ece" else (1.0, 4, "")

    lines = [f"Study (seed-level rule): the replicate is the training seed; seeds {', '.join(map(str, s['seeds'] or []))}.",
             ""]
    if s["rows"]:
        extra = [m for m in next(iter(s["rows"].values())) if m not in ("dice", "ece")]  # in percent, as ECE
        lines += ["| row | Dice (mean over seeds) | sd over seeds | ECE % | sd over seeds |"
                  + "".join(f" {m} % | sd over seeds |" for m in extra), "|---|---|---|---|---|" + "---|---|" * len(extra)]
        for row, e in s["rows"].items():
            d = e["dice"]
            line = f"| {row} | {fmt(d['mean'], 4)} | {fmt_any(d['seed_sd'])} |"
            for m in ["ece"] + extra:
                c = e[m]
                line += f" {fmt(100 * c['mean'], 2)} | {fmt_any(None if c['seed_sd'] is None else 100 * c['seed_sd'], 2)} |"
            lines.append(line)
        lines.append("")
    lines += ["| claim | verdict | improvement [95% CI] | per seed | test, p (Holm) | power |", "|---|---|---|---|---|---|"]
    if s.get("secondary"):
        lines_secondary = ["", "Secondary comparisons, outside the Holm family (no verdict; p unadjusted):", "",
                           "| comparison | improvement [95% CI] | per seed | test, p |", "|---|---|---|---|"]
        for c in s["secondary"]:
            k, digits, unit = scale(c["metric"])
            lines_secondary.append(
                f"| {c['claim']} | {c['effect'] * k:+.{digits}f}{unit} [{c['ci95'][0] * k:+.{digits}f}, "
                f"{c['ci95'][1] * k:+.{digits}f}] | {', '.join(f'{v * k:+.{digits}f}' for v in c['per_seed'])} | "
                f"{c['test']}, {fmt_any(c['p_value'], 'p')} |")
    else:
        lines_secondary = []
    for c in s["claims"]:
        if c["verdict"] == "not run":
            lines.append(f"| {c['key']}: {c['claim']} ({c['row']} vs {c['reference']}) | not run | | | | |")
            continue
        k, digits, unit = scale(c["metric"])
        ci = "no interval" if c["ci95"] is None else f"[{c['ci95'][0] * k:+.{digits}f}, {c['ci95'][1] * k:+.{digits}f}]"
        per_seed = ", ".join(f"{v * k:+.{digits}f}" for v in c["per_seed"])
        p = f"{c['test']}, {fmt_any(c['p_value'], 'p')} ({fmt_any(c['p_holm'], 'p')})"
        if c.get("p_t_informative") is not None and c["p_value"] is None:
            p += f"; t on {c['seeds']} seeds {fmt_p(c['p_t_informative'])} (Holm {fmt_p(c['p_t_informative_holm'])})"
        lines.append(f"| {c['key']}: {c['claim']} ({c['row']} vs {c['reference']}, {c['metric']}) | "
                     f"**{c['verdict']}** | {c['effect'] * k:+.{digits}f}{unit} {ci} | {per_seed} | {p} | "
                     f"{fmt_any(c['power'], 2)} |")
    return "\n".join(lines + lines_secondary) + "\n"


# --- study v1's rules under a true null -----------------------------------------------------------

V1_TESTS = ["dice", "ece", "dice", "ece", "ece"]  # soft Dice, soft ECE, KD Dice, KD ECE, calibrated KD ECE
# Noise of a paired improvement at study v1's levels (docs/benchmarks.md): sd over seeds of the
# per-seed, case-averaged improvement, and sd over cases within a seed.
V1_NOISE = {"dice": {"seed_sd": 0.0125, "case_sd": 0.024}, "ece": {"seed_sd": 0.002, "case_sd": 0.0005}}


def simulate_case_differences(rng, seeds, cases, seed_sd, case_sd, effect=0.0):
    """Per-case paired improvements [seeds, cases]: effect + seed term + case noise."""
    return effect + seed_sd * rng.standard_normal((seeds, 1)) + case_sd * rng.standard_normal((seeds, cases))


def simulate_v1_null(rng, studies=1000, seeds=3, cases=30, noise=V1_NOISE, permutations=2000):
    """Rates of a verdict other than 'cannot tell' under a true null, for v1's two rules.

    Returns {rule: {"per_test": {dice, ece}, "family": rate}}: per test, the fraction of tests
    with a verdict; family, the fraction of studies with at least one."""
    global PERMUTATIONS
    saved, PERMUTATIONS = PERMUTATIONS, permutations
    try:
        counts = {"preregistered": np.zeros(len(V1_TESTS)), "every_seed": np.zeros(len(V1_TESTS))}
        family = {"preregistered": 0, "every_seed": 0}
        for _ in range(studies):
            tests = []
            for metric in V1_TESTS:
                d = simulate_case_differences(rng, seeds, cases, **noise[metric])
                averaged = d.mean(axis=0)
                tests.append({"ci95": bootstrap_interval(averaged, rng), "p_value": sign_flip_p(averaged, rng),
                              "seed_improvements": list(d.mean(axis=1))})
            for t, a in zip(tests, holm([t["p_value"] for t in tests])):
                t["p_holm"] = a
            for name, rule in (("preregistered", verdict_v1_preregistered), ("every_seed", verdict)):
                said = np.array([rule(t) != "cannot tell" for t in tests])
                counts[name] += said
                family[name] += bool(said.any())
    finally:
        PERMUTATIONS = saved
    out = {}
    for name in counts:
        per = counts[name] / studies
        out[name] = {"per_test": {m: float(np.mean([per[i] for i, k in enumerate(V1_TESTS) if k == m]))
                                  for m in ("dice", "ece")}, "family": family[name] / studies}
    return out


def write(summary, out, text):
    """study.json and study.md, each written under a temporary name and renamed when complete."""
    import os
    for name, body in (("study.json", json.dumps(summary, indent=2) + "\n"), ("study.md", text)):
        path = os.path.join(out, name)
        with open(path + ".tmp", "w") as f:
            f.write(body)
        os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="*")
    parser.add_argument("--rows")
    parser.add_argument("--seeds")
    parser.add_argument("--out", default=".")
    parser.add_argument("--claims", help="JSON list of {key, claim, row, reference, metric}; default study v2's")
    parser.add_argument("--check-claims", metavar="JSON", help="check a claims file and exit")
    parser.add_argument("--rule", choices=("v2", "v1"), default="v2")
    parser.add_argument("--from-seed-differences", metavar="JSON")
    parser.add_argument("--simulate-v1-null", action="store_true")
    parser.add_argument("--studies", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.check_claims:
        print(f"{args.check_claims}: {len(load_claims(args.check_claims))} claims")
        return
    if args.simulate_v1_null:
        print(json.dumps(simulate_v1_null(rng, studies=args.studies), indent=2))
        return
    if args.from_seed_differences:
        summary = study_from_seed_differences(json.load(open(args.from_seed_differences)), rng)
        summary["rule"] = rule_v2()
        text = markdown_v2(summary)
        write(summary, args.out, text)
        print(text)
        return
    if not args.report or not args.rows or not args.seeds:
        parser.error("give report.json, --rows and --seeds (or --from-seed-differences / --simulate-v1-null)")
    if args.rule == "v1":
        main_v1(args)
        return
    report = load_reports(args.report)
    summary = study_v2(report, args.rows.split(), args.seeds.split(), load_claims(args.claims), rng)
    summary.update(reports=args.report, rule=rule_v2(),
                   temperature_scaling=temperature_scaling(report, args.rows.split(), args.seeds.split()))
    text = markdown_v2(summary) + markdown_temperature_scaling(summary["temperature_scaling"])
    write(summary, args.out, text)
    print(text)


if __name__ == "__main__":
    main()
