"""Write (or, with --check, verify) the seeds that come from the repository's
lme4 reference fixtures, so they never drift from their source:

- seeds/dietox.csv: a byte-for-byte copy of tests/fixtures/data/dietox.csv
  (geepack::dietox, 861 rows).
- seeds/lme4_dietox_rs_fixef.csv: lme4's REML fixed effects and standard
  errors of Weight ~ Time + (Time | Pig), from tests/fixtures/dietox_rs.json
  (lme4 1.1-31; keys lme4.REML.fixed_effects).
- seeds/lme4_dietox_rs_predictions.csv: for every row of
  seeds/score_requests.csv, lme4's population-level prediction
  (fixed effects only) and conditional prediction (fixed effects plus the
  pig's BLUPs, keys lme4.REML.blups; 0 for a pig lme4 did not see).

Usage (from anywhere): python examples/dbt/scripts/make_seeds.py [--check]
"""
import csv
import io
import json
import pathlib
import sys

PROJECT = pathlib.Path(__file__).resolve().parents[1]
ROOT = PROJECT.parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SEEDS = PROJECT / "seeds"


def to_csv(header, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def generated():
    """Map of seed file name -> its expected text."""
    fit = json.loads((FIXTURES / "dietox_rs.json").read_text())["lme4"]["REML"]
    fe = fit["fixed_effects"]
    fixef = dict(zip(fe["names"], fe["estimate"]))
    files = {
        "dietox.csv": (FIXTURES / "data" / "dietox.csv").read_text(),
        "lme4_dietox_rs_fixef.csv": to_csv(
            ["term", "estimate", "std_error"],
            [[n, repr(e), repr(s)] for n, e, s in zip(fe["names"], fe["estimate"], fe["std_error"])],
        ),
    }
    (blups,) = [b for b in fit["blups"] if b["grouping_factor"] == "Pig"]
    assert blups["terms"] == ["(Intercept)", "Time"], blups["terms"]
    ranef = dict(zip(blups["levels"], blups["values"]))
    rows = []
    with open(SEEDS / "score_requests.csv", newline="") as f:
        for req in csv.DictReader(f):
            time = float(req["Time"])
            population = fixef["(Intercept)"] + fixef["Time"] * time
            u0, u1 = ranef.get(req["Pig"], (0.0, 0.0))
            conditional = fixef["(Intercept)"] + u0 + (fixef["Time"] + u1) * time
            rows.append([req["score_id"], repr(population), repr(conditional)])
    files["lme4_dietox_rs_predictions.csv"] = to_csv(["score_id", "pred_population", "pred_conditional"], rows)
    return files


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, text in generated().items():
        path = SEEDS / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        sys.exit(f"stale seeds (run python examples/dbt/scripts/make_seeds.py): {', '.join(stale)}")
    if check:
        print("seeds match their sources in tests/fixtures")


if __name__ == "__main__":
    main()
