"""Fit a linear mixed model with lmm from Python duckdb, take its tidy table
into pandas, print the fixed effects and draw a caterpillar plot of the
BLUPs (one panel per random-effect term, groups sorted by their BLUP, bars
of +-1.96 conditional SD), and next to it the profile of every parameter
(lmm_profile: zeta against the parameter, with the 95% profile interval of
lmm_confint), as lme4's xyplot(profile(fit)).

    .venv/bin/python examples/python/caterpillar.py [--out docs/caterpillar.png] [--profile-out docs/profile.png]

Needs the built extension (bash scripts/build.sh) and
examples/python/requirements.txt (pandas, matplotlib; in .venv already).
"""
import argparse
import os
import pathlib

import duckdb
import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXTENSION = os.environ.get("LMM_EXTENSION", str(ROOT / "build" / "release" / "lmm.duckdb_extension"))
DATA = ROOT / "tests" / "fixtures" / "data" / "sleepstudy.csv"
FORMULA = "Reaction ~ Days + (Days | Subject)"
Z95 = 1.959963984540054  # the 97.5% normal quantile


def fit_tidy(formula=FORMULA, data=DATA):
    """Fit `formula` (REML) to the CSV `data`; the tidy table as a DataFrame."""
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    try:
        con.execute("LOAD " + quote(EXTENSION))
        con.execute("CREATE TABLE sleepstudy AS SELECT * FROM read_csv(" + quote(str(data)) + ")")
        return con.execute("SELECT * FROM lmm_fit('sleepstudy', ?)", [formula]).df()
    finally:
        con.close()


def fit_profile(formula=FORMULA, data=DATA):
    """The model's profile (lmm_profile) and its 95% profile intervals (lmm_confint) as DataFrames."""
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    try:
        con.execute("LOAD " + quote(EXTENSION))
        con.execute("CREATE TABLE sleepstudy AS SELECT * FROM read_csv(" + quote(str(data)) + ")")
        con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, ?) AS model FROM sleepstudy t", [formula])
        points = con.execute("SELECT * FROM lmm_profile((SELECT model FROM m)) ORDER BY parameter, value").df()
        limits = con.execute("SELECT * FROM lmm_confint((SELECT model FROM m))").df()
        return points, limits
    finally:
        con.close()


def profile_plot(points, limits, out, title):
    """One panel per parameter: zeta against its value, the 95% limits marked."""
    params = list(dict.fromkeys(points["parameter"]))
    cols = 3
    rows = (len(params) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, params):
        panel = points[points["parameter"] == name]
        ax.plot(panel["value"], panel["zeta"], "-", color="tab:blue", linewidth=1.6)
        ax.axhline(0.0, color="0.55", linewidth=0.8)
        for z in (-Z95, Z95):
            ax.axhline(z, color="0.75", linewidth=0.8, linestyle="--")
        term, group = panel["term"].iloc[0], panel["group_var"].iloc[0]
        row = limits[(limits["term"] == term) & ((limits["group_var"] == group) | (limits["group_var"].isna() & panel["group_var"].isna().iloc[0]))]
        for x in (row["conf_low"].tolist() + row["conf_high"].tolist()):
            if x == x:  # not NULL
                ax.axvline(x, color="tab:red", linewidth=1.0)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("value")
        ax.set_ylabel("ζ")
        ax.grid(color="0.93")
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def caterpillar(tidy, out, title):
    """Draw one panel per random-effect term: every group's BLUP, sorted, with
    +-1.96 conditional SD; save the figure as `out`."""
    blups = tidy[tidy["effect"] == "ran_vals"]
    terms = list(dict.fromkeys(blups["term"]))
    group_var = blups["group_var"].iloc[0]
    fig, axes = plt.subplots(1, len(terms), figsize=(5.2 * len(terms), 0.3 * blups["level"].nunique() + 1.8),
                             squeeze=False)
    for ax, term in zip(axes[0], terms):
        panel = blups[blups["term"] == term].sort_values("estimate")
        pos = range(len(panel))
        ax.axvline(0.0, color="0.55", linewidth=1, zorder=1)
        ax.errorbar(panel["estimate"], pos, xerr=Z95 * panel["std_error"], fmt="o", color="tab:blue",
                    ecolor="tab:blue", elinewidth=1.4, capsize=2.5, markersize=5, zorder=2)
        ax.set_yticks(list(pos), labels=panel["level"])
        ax.set_ylim(-0.7, len(panel) - 0.3)
        ax.set_title(f"{term}", fontsize=12)
        ax.set_xlabel(f"BLUP of {term} (deviation from the fixed effect)")
        ax.set_ylabel(group_var)
        ax.grid(axis="x", color="0.9", zorder=0)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "caterpillar.png"), help="PNG to write")
    parser.add_argument("--profile-out", default=None, help="PNG of the profiles (default: profile.png beside --out)")
    args = parser.parse_args()
    tidy = fit_tidy()
    fixed = tidy[tidy["effect"] == "fixed"][["term", "estimate", "std_error", "statistic", "p_value"]]
    print(f"{FORMULA} (REML), sleepstudy: fixed effects")
    print(fixed.to_string(index=False))
    n_groups = tidy[tidy["effect"] == "ran_vals"]["level"].nunique()
    caterpillar(tidy, args.out,
                f"sleepstudy: {FORMULA}, REML\nBLUPs of the {n_groups} subjects, ±1.96 conditional SD")
    profile_out = args.profile_out or str(pathlib.Path(args.out).with_name("profile.png"))
    points, limits = fit_profile()
    print("95% profile intervals (ML profile, as lme4's confint):")
    print(limits[["group_var", "term", "conf_low", "conf_high"]].to_string(index=False))
    profile_plot(points, limits, profile_out, f"sleepstudy: {FORMULA}\nprofile ζ of every parameter, 95% limits in red")
    print(f"wrote {profile_out}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
