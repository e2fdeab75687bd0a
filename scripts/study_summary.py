#!/usr/bin/python3
"""The study's summary (scripts/study.sh): study.json and study.md from one kdseg report.

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

  study_summary.py report.json --rows "majority mean ..." --seeds "0 1 2" --out DIR
"""
import argparse
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


def per_case(report, name, metric, region):
    """{case id: value} of one model, NaN cases left out."""
    model = next(m for m in report["models"] if m["name"] == name)
    out = {}
    for case in model["cases"]:
        value = case["dice"][region] if metric == "dice" else case["ece"]
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


def verdict(test):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--rows", required=True)
    parser.add_argument("--seeds", required=True)
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    report = json.load(open(args.report))
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

    summary = {"report": args.report, "region": region, "seeds": seeds, "rows": table, "claims": claims,
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


if __name__ == "__main__":
    main()
