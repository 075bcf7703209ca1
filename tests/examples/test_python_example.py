"""Smoke test of examples/python/caterpillar.py: it runs as a user would run it,
writes a PNG, and its DataFrame holds the whole tidy table of the fit."""
import csv
import importlib.util
import json
import pathlib
import subprocess
import sys

import matplotlib.image

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "python" / "caterpillar.py"


def load_example():
    spec = importlib.util.spec_from_file_location("caterpillar", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_writes_png_and_prints_fixed_effects(tmp_path):
    out = tmp_path / "caterpillar.png"
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    profile = tmp_path / "profile.png"
    assert profile.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {profile}" in run.stdout
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(out).shape
    assert width > height > 300  # two panels side by side, 18 rows each
    lines = run.stdout.splitlines()
    assert any(line.split()[:1] == ["(Intercept)"] for line in lines), run.stdout
    assert any(line.split()[:1] == ["Days"] for line in lines), run.stdout
    assert lines[-1] == f"wrote {out}"


def test_dataframe_is_the_tidy_table():
    tidy = load_example().fit_tidy()
    with open(ROOT / "tests" / "fixtures" / "data" / "sleepstudy.csv", newline="") as f:
        subjects = {row["Subject"] for row in csv.DictReader(f)}
    blups = tidy[tidy["effect"] == "ran_vals"]
    assert len(blups) == 2 * len(subjects)
    assert set(blups["level"]) == subjects
    assert sorted(blups["term"].unique()) == ["(Intercept)", "Days"]
    assert (blups["std_error"] > 0).all()
    assert set(tidy["effect"]) == {"fixed", "ran_pars", "ran_vals", "fit"}
    # the fixed effects are lme4's (fixture sleepstudy_rs, REML)
    ref = json.loads((ROOT / "tests" / "fixtures" / "sleepstudy_rs.json").read_text())["lme4"]["REML"]
    fixed = tidy[tidy["effect"] == "fixed"].set_index("term")["estimate"]
    assert list(fixed.index) == ref["fixed_effects"]["names"]
    for name, value in zip(ref["fixed_effects"]["names"], ref["fixed_effects"]["estimate"]):
        assert abs(fixed[name] - value) <= 1e-4 * abs(value)


def test_profile_frames():
    points, limits = load_example().fit_profile()
    assert set(points["parameter"]) == {"sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject",
                                        "sigma", "(Intercept)", "Days"}
    days = limits[limits["term"] == "Days"].iloc[0]
    # lme4's confint(fm1): Days [7.3587, 13.5759]
    assert abs(days["conf_low"] - 7.3587) < 1e-3 and abs(days["conf_high"] - 13.5759) < 1e-3
