"""Model values: lmm_model_agg, lmm_predict, lmm_tidy (issue 4).

Expected predictions are computed here from lme4's fixtures: the fixed effects
and BLUPs of a fit fully determine its predictions. Our own fit reaches the
optimum more tightly than lme4's default optimizer (the fixtures'
`optimum_check`), so two kinds of checks are made:
- a model value carrying the fixture's β and BLUPs (patched into the value
  with an independent reader/writer of docs/model-format.md) must predict
  exactly what lme4's `predict(fit, newdata, allow.new.levels = TRUE)` gives;
- our own fit must predict what lme4 gives at its tightly converged optimum
  (θ and β from `optimum_check`, BLUPs by the closed form).
"""
import math
import struct

import duckdb
import pytest

from conftest import EXT, connect, fixture, load_csv, rows

# ---------------------------------------------------------------------------
# An independent implementation of docs/model-format.md (reader + checksum)
# ---------------------------------------------------------------------------

M64 = (1 << 64) - 1


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def checksum(data):
    k1, k2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F
    a, b = 0x243F6A8885A308D3, 0x13198A2E03707344
    n = len(data) // 16
    for i in range(n):
        x, y = struct.unpack_from("<QQ", data, 16 * i)
        a = _rotl(((a ^ x) * k1) & M64, 29)
        b = _rotl(((b ^ y) * k2) & M64, 31)
    for i, byte in enumerate(data[16 * n:]):
        a = _rotl(((a ^ (byte << (8 * (i % 8)))) * k1) & M64, 29)
    h = a ^ _rotl(b, 17) ^ ((len(data) * k2) & M64)
    h ^= h >> 33
    h = (h * k1) & M64
    h ^= h >> 29
    return h


class Reader:
    def __init__(self, data, pos):
        self.d, self.p = data, pos

    def take(self, n):
        b = self.d[self.p:self.p + n]
        assert len(b) == n
        self.p += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def str(self):
        return self.take(self.u32()).decode()

    def f64s(self):
        n = self.u64()
        at = self.p
        return at, list(struct.unpack(f"<{n}d", self.take(8 * n)))

    def keys(self):
        n, ints = self.u64(), self.u8()
        if ints == 1:
            return list(struct.unpack(f"<{n}q", self.take(8 * n)))
        out = []
        for _ in range(n):
            out.append(self.take(self.u32()))
        return out

    def col(self):
        name = self.str()
        parts = [(self.u32(), self.u32()) for _ in range(self.u32())]
        return name, parts


def label(key):
    """A level key as text: integers as is; a one-part text key (tag 3, u32 length, bytes) decoded."""
    if isinstance(key, int):
        return str(key)
    assert key[0] == 3 and struct.unpack_from("<I", key, 1)[0] == len(key) - 5
    return key[5:].decode()


def parse_model(blob):
    """The parts of a model value the tests patch or inspect, with byte offsets."""
    blob = bytes(blob)
    assert blob[:8] == b"LMMMODEL"
    version, flags, csum, length = struct.unpack_from("<IIQQ", blob, 8)
    payload = blob[32:]
    if flags & 1:  # the statistics section: [checksum][body] ... [u64 its length]
        n, = struct.unpack_from("<Q", payload, len(payload) - 8)
        assert checksum(payload[len(payload) - 8 - n + 8:len(payload) - 8]) == struct.unpack_from("<Q", payload, len(payload) - 8 - n)[0]
        payload = payload[:len(payload) - 8 - n]
    assert len(blob) == 32 + length and checksum(payload) == csum
    r = Reader(blob, 32)
    m = {"version": version, "formula": r.str(), "method": r.u8(), "vars": [], "factors": []}
    for _ in range(r.u32()):
        name, type_name, flags, tag = r.str(), r.str(), r.u8(), r.u8()
        m["vars"].append({"name": name, "type": type_name, "flags": flags, "tag": tag, "levels": r.keys()})
        if flags & 8:  # version 3: the contrast matrix
            m["vars"][-1]["coding"] = r.f64s()[1]
        if flags & 16:  # version 4: scale()'s centre and scale
            m["vars"][-1]["scaling"] = r.f64s()[1]
        if flags & 32:  # version 5: poly()'s basis, R's coefs
            raw, degree, origin = r.u8(), r.u32(), r.f64s()[1][0]
            m["vars"][-1]["poly"] = {"raw": raw, "degree": degree, "origin": origin, "alpha": r.f64s()[1], "norm2": r.f64s()[1]}
    m["fixed"] = [r.col() for _ in range(r.u32())]
    m["beta_at"], m["beta"] = r.f64s()
    for _ in range(r.u32()):
        f = {"name": r.str()}
        f["vars"] = [r.u32() for _ in range(r.u32())]
        f["terms"] = [r.col() for _ in range(r.u32())]
        f["keys"] = r.keys()
        f["blup_at"], f["blup"] = r.f64s()
        if r.u8():
            r.f64s()
        m["factors"].append(f)
    return m


def model_length(blob):
    """Bytes of the model part of a value's payload (before any statistics section)."""
    flags, = struct.unpack_from("<I", blob, 12)
    payload = blob[32:]
    if flags & 1:
        n, = struct.unpack_from("<Q", payload, len(payload) - 8)
        return len(payload) - 8 - n
    return len(payload)


def rewrite(blob, patches):
    """Write doubles at offsets (offset -> list of values) and fix the checksum."""
    b = bytearray(blob)
    for at, values in patches.items():
        struct.pack_into(f"<{len(values)}d", b, at, *values)
    flags, = struct.unpack_from("<I", b, 12)
    payload = bytes(b[32:])
    if flags & 1:
        n, = struct.unpack_from("<Q", payload, len(payload) - 8)
        payload = payload[:len(payload) - 8 - n]
    struct.pack_into("<Q", b, 16, checksum(payload))
    return bytes(b)


def with_lme4_parameters(blob, fx):
    """The model value with lme4's (fixture) β and BLUPs in place of ours."""
    m = parse_model(blob)
    reml = fx["lme4"]["REML"]
    assert [c[0] for c in m["fixed"]] == reml["fixed_effects"]["names"]
    bl = reml["blups"][0]
    f = m["factors"][0]
    assert [c[0] for c in f["terms"]] == bl["terms"]
    assert [label(k) for k in f["keys"]] == [str(x) for x in bl["levels"]]
    nl = len(bl["levels"])
    blup = [bl["values"][lvl][t] for t in range(len(bl["terms"])) for lvl in range(nl)]
    return rewrite(blob, {m["beta_at"]: reml["fixed_effects"]["estimate"], f["blup_at"]: blup})


# ---------------------------------------------------------------------------
# Expected values
# ---------------------------------------------------------------------------

def lme4_prediction(fx, row, group, re=True, coded=None):
    """β·x + Σ_t z_t b_t[level] from the fixture; unseen level: 0. `coded`
    gives the value of design columns that are not columns of the row (factor indicators)."""
    reml = fx["lme4"]["REML"]
    coded = coded or {}
    val = lambda name: 1.0 if name == "(Intercept)" else coded[name] if name in coded else float(row[name])
    eta = sum(b * val(n) for n, b in zip(reml["fixed_effects"]["names"], reml["fixed_effects"]["estimate"]))
    bl = reml["blups"][0]
    levels = [str(x) for x in bl["levels"]]
    if re and str(row[group]) in levels:
        i = levels.index(str(row[group]))
        eta += sum(bl["values"][i][k] * val(t) for k, t in enumerate(bl["terms"]))
    return eta


def lme4_tight_predictions(fx, data, y, x, group):
    """lme4 at its tightly converged optimum (optimum_check nloptwrap_tight):
    b_g = Λ (ΛᵀZ_gᵀZ_gΛ + I)⁻¹ ΛᵀZ_gᵀ(y_g − X_g β) for `y ~ x + (x | g)`."""
    tight = next(o for o in fx["lme4"]["REML"]["optimum_check"] if o["optimizer"] == "nloptwrap_tight")
    t0, t1, t2 = tight["theta"]
    b0, b1 = tight["beta"]
    lam = [[t0, 0.0], [t1, t2]]
    blup = {}
    for g in {r[group] for r in data}:
        ztz = [[0.0, 0.0], [0.0, 0.0]]
        ztr = [0.0, 0.0]
        for r in data:
            if r[group] != g:
                continue
            z = [1.0, float(r[x])]
            res = float(r[y]) - b0 - b1 * z[1]
            for a in range(2):
                ztr[a] += z[a] * res
                for c in range(2):
                    ztz[a][c] += z[a] * z[c]
        m = [[sum(lam[i][a] * ztz[i][j] * lam[j][c] for i in range(2) for j in range(2)) + (a == c)
              for c in range(2)] for a in range(2)]
        v = [sum(lam[i][a] * ztr[i] for i in range(2)) for a in range(2)]
        det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
        u = [(m[1][1] * v[0] - m[0][1] * v[1]) / det, (m[0][0] * v[1] - m[1][0] * v[0]) / det]
        blup[g] = (lam[0][0] * u[0], lam[1][0] * u[0] + lam[1][1] * u[1])
    return [b0 + b1 * float(r[x]) + blup[r[group]][0] + blup[r[group]][1] * float(r[x]) for r in data]


def close(a, b, rel=1e-6):
    return abs(a - b) <= rel * max(abs(b), 1.0)


CASES = [
    ("dietox", "dietox_rs", "Weight ~ Time + (Time | Pig)", "Weight", "Time", "Pig"),
    ("sleepstudy", "sleepstudy_rs", "Reaction ~ Days + (Days | Subject)", "Reaction", "Days", "Subject"),
]


def model_blob(con, table, formula):
    return con.execute(f"SELECT lmm_model_agg(t, ?) FROM {table} t", [formula]).fetchone()[0]


# ---------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("table,fx_name,formula,y,x,group", CASES)
def test_predictions_with_lme4_parameters_equal_lme4(con, table, fx_name, formula, y, x, group):
    fx = fixture(fx_name)
    blob = with_lme4_parameters(model_blob(con, table, formula), fx)
    con.execute("CREATE TABLE m AS SELECT ?::BLOB AS model", [blob])
    # New data: the fitted rows plus a group the fit never saw.
    con.execute(f"""CREATE TABLE newdata AS SELECT {group}, {x} FROM {table}
                    UNION ALL SELECT 999999 AS {group}, unnest([0, 1.5, 7]) AS {x}""")
    got = rows(con, f"""SELECT n.*, lmm_predict(m.model, n) AS hat, lmm_predict(m.model, n, re := false) AS pop
                        FROM newdata n, m""")
    assert len(got) > 100
    unseen = 0
    for r in got:
        assert close(r["hat"], lme4_prediction(fx, r, group)), r
        assert close(r["pop"], lme4_prediction(fx, r, group, re=False)), r
        if r[group] == 999999:
            unseen += 1
            assert r["hat"] == r["pop"]
    assert unseen == 3


@pytest.mark.parametrize("table,fx_name,formula,y,x,group", CASES)
def test_own_fit_predicts_as_lme4_at_its_optimum(con, table, fx_name, formula, y, x, group):
    fx = fixture(fx_name)
    con.execute(f"CREATE TABLE m AS SELECT lmm_model_agg(t, '{formula}') AS model FROM {table} t")
    data = rows(con, f"SELECT d.*, lmm_predict(m.model, d) AS hat, d.{y} - lmm_predict(m.model, d) AS resid "
                     f"FROM {table} d, m ORDER BY {group}, {x}")
    want = lme4_tight_predictions(fx, data, y, x, group)
    for r, w in zip(data, want):
        assert close(r["hat"], w), (r, w)
        assert abs(r["resid"] - (float(r[y]) - r["hat"])) < 1e-9
    # The same as the linear predictor built in SQL from lmm_fit's own table.
    sql = rows(con, f"""
        WITH t AS (SELECT * FROM lmm_fit('{table}', '{formula}')),
        fe AS (SELECT max(estimate) FILTER (term = '(Intercept)') AS b0, max(estimate) FILTER (term = '{x}') AS b1
               FROM t WHERE effect = 'fixed'),
        re AS (SELECT level, max(estimate) FILTER (term = '(Intercept)') AS u0, max(estimate) FILTER (term = '{x}') AS u1
               FROM t WHERE effect = 'ran_vals' GROUP BY level)
        SELECT max(abs(fe.b0 + fe.b1 * d.{x} + re.u0 + re.u1 * d.{x} - lmm_predict(m.model, d))) AS worst
        FROM {table} d JOIN re ON re.level = CAST(d.{group} AS VARCHAR), fe, m""")
    assert sql[0]["worst"] < 1e-9


def test_unseen_group_is_population_level(con):
    con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'Weight ~ Time + (Time | Pig)') AS model "
                "FROM dietox t WHERE Pig <> 4601")
    r = rows(con, """SELECT Pig = 4601 AS unseen, count(*) AS n,
                            count(*) FILTER (lmm_predict(m.model, d) = lmm_predict(m.model, d, re := false)) AS same
                     FROM dietox d, m GROUP BY ALL ORDER BY unseen""")
    assert r[0] == {"unseen": False, "n": 849, "same": 0}
    assert r[1] == {"unseen": True, "n": 12, "same": 12}


def test_categorical_fixed_factor(con):
    fx = fixture("synthetic_small")
    f = "y ~ x1 + x2 + site + (x1 | g)"
    blob = with_lme4_parameters(model_blob(con, "synthetic_small", f), fx)
    m = parse_model(blob)
    site = next(v for v in m["vars"] if v["name"] == "site")
    assert site["levels"] == [b"\x03\x06\x00\x00\x00site_a", b"\x03\x06\x00\x00\x00site_b", b"\x03\x06\x00\x00\x00site_c"]
    con.execute("CREATE TABLE m AS SELECT ?::BLOB AS model", [blob])
    beta = dict(zip(fx["lme4"]["REML"]["fixed_effects"]["names"], fx["lme4"]["REML"]["fixed_effects"]["estimate"]))
    got = rows(con, "SELECT d.*, lmm_predict(m.model, d) AS hat, lmm_predict(m.model, d, re := false) AS pop "
                    "FROM synthetic_small d, m")
    for r in got:
        coded = {"(Intercept)": 1.0, "x1": r["x1"], "x2": r["x2"],
                 "sitesite_b": float(r["site"] == "site_b"), "sitesite_c": float(r["site"] == "site_c")}
        assert close(r["pop"], sum(beta[k] * v for k, v in coded.items())), r
        assert close(r["hat"], lme4_prediction(fx, r, "g", coded=coded)), r
    # An ENUM column of the same labels codes alike.
    e = rows(con, "SELECT lmm_predict(m.model, {'x1': 0.5, 'x2': 1.0, 'site': 'site_c'::ENUM('site_a', 'site_b', 'site_c'), "
                  "'g': 'g003'}) AS hat FROM m")[0]["hat"]
    v = rows(con, "SELECT lmm_predict(m.model, {'x1': 0.5, 'x2': 1.0, 'site': 'site_c', 'g': 'g003'}) AS hat FROM m")[0]["hat"]
    assert e == v
    # An unseen level of the fixed factor is an error naming column and level.
    with pytest.raises(duckdb.Error) as err:
        con.execute("SELECT lmm_predict(m.model, {'x1': 0.5, 'x2': 1.0, 'site': 'site_z', 'g': 'g003'}) FROM m").fetchall()
    assert "column 'site'" in str(err.value) and "'site_z'" in str(err.value)
    # ... also with re := false.
    with pytest.raises(duckdb.Error, match="site_z"):
        con.execute("SELECT lmm_predict(m.model, {'x1': 0.5, 'x2': 1.0, 'site': 'site_z', 'g': 'g003'}, re := false) "
                    "FROM m").fetchall()


def test_nulls(con):
    con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)') AS model FROM sleepstudy t")
    r = rows(con, """SELECT
        lmm_predict(m.model, {'Days': NULL::INTEGER, 'Subject': 308}) AS null_x,
        lmm_predict(m.model, {'Days': 3, 'Subject': NULL::INTEGER}) AS null_group,
        lmm_predict(m.model, {'Days': 3, 'Subject': NULL::INTEGER}, re := false) AS null_group_pop,
        lmm_predict(m.model, {'Days': 3, 'Subject': 308}, re := false) AS pop,
        lmm_predict(NULL::BLOB, {'Days': 3, 'Subject': 308}) AS null_model,
        lmm_predict(m.model, {'Days': 3, 'Subject': 308}, re := NULL) AS null_re,
        lmm_predict(m.model, NULL::STRUCT(Days INTEGER, Subject INTEGER)) AS null_row
        FROM m""")[0]
    assert r["null_x"] is None and r["null_group"] is None
    assert r["null_model"] is None and r["null_re"] is None and r["null_row"] is None
    assert r["null_group_pop"] is not None and r["null_group_pop"] == r["pop"]
    # NULL rows mixed with valid ones in one chunk.
    mixed = rows(con, "SELECT lmm_predict(m.model, d) AS hat FROM (SELECT CASE WHEN Days % 3 = 0 THEN NULL ELSE Days END AS Days, "
                      "Subject FROM sleepstudy) d, m")
    assert sum(r["hat"] is None for r in mixed) == 18 * 4
    assert all(r["hat"] is not None and math.isfinite(r["hat"]) for r in mixed if r["hat"] is not None)


# ---------------------------------------------------------------------------
# lmm_tidy and GROUP BY
# ---------------------------------------------------------------------------

COLUMNS = ["effect", "group_var", "level", "term", "estimate", "std_error", "statistic", "df", "p_value",
           "conf_low", "conf_high"]


def same_table(a, b):
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        for c in COLUMNS:
            u, v = x[c], y[c]
            if isinstance(u, float) and isinstance(v, float) and math.isnan(u):
                assert math.isnan(v), (c, x, y)
            else:
                assert u == v, (c, x, y)


@pytest.mark.parametrize("table,formula,named", [
    ("dietox", "Weight ~ Time + (Time | Pig)", {}),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)", {"method": "ML"}),
    ("synthetic_small", "y ~ x1 + x2 + site + (x1 | g)", {"ranef": False}),
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", {}),
    ("pastes", "strength ~ 1 + (1 | batch/cask)", {}),
])
def test_tidy_round_trip_equals_lmm_fit(con, table, formula, named):
    opts = "{" + ", ".join(f"'{k}': {repr(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in named.items()) + "}"
    extra = f", {opts}" if named else ""
    con.execute(f"CREATE TABLE m AS SELECT lmm_model_agg(t, '{formula}'{extra}) AS model FROM {table} t")
    a = rows(con, "SELECT * FROM lmm_tidy((SELECT model FROM m))")
    params = ", ".join(f"{k} := {repr(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in named.items())
    b = rows(con, f"SELECT * FROM lmm_fit('{table}', '{formula}'{', ' + params if params else ''})")
    same_table(a, b)
    # The tidy list itself, as lmm_fit_agg returns it.
    c = con.execute(f"SELECT lmm_model_tidy(model) = (SELECT lmm_fit_agg(t, '{formula}'{extra}) FROM {table} t) FROM m").fetchone()[0]
    assert c is True


def test_group_by_one_model_per_segment(con):
    con.execute("""CREATE TABLE models AS SELECT Days < 5 AS early, lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)') AS model
                   FROM sleepstudy t GROUP BY early""")
    assert con.execute("SELECT count(*), count(DISTINCT model) FROM models").fetchone() == (2, 2)
    for early in (True, False):
        a = rows(con, f"SELECT * FROM lmm_tidy((SELECT model FROM models WHERE early = {early}))")
        b = rows(con, "SELECT unnest(lmm_fit_agg(t, 'Reaction ~ Days + (Days | Subject)'), recursive := true) "
                      f"FROM sleepstudy t WHERE (Days < 5) = {early}")
        same_table(a, b)
    # Each row scored by its segment's model equals scoring with that model alone.
    joined = rows(con, """SELECT d.Subject, d.Days, lmm_predict(m.model, d) AS hat FROM sleepstudy d
                          JOIN models m ON m.early = (d.Days < 5) ORDER BY ALL""")
    alone = []
    for early in (True, False):
        alone += rows(con, f"""SELECT d.Subject, d.Days, lmm_predict(m.model, d) AS hat FROM sleepstudy d,
                               (SELECT model FROM models WHERE early = {early}) m WHERE (d.Days < 5) = {early}""")
    alone.sort(key=lambda r: (r["Subject"], r["Days"]))
    assert joined == alone


def test_many_rows_many_models_threads(con):
    # Several models interleaved across chunks and threads: equal to the SQL linear predictor.
    con.execute("SET threads = 2")
    con.execute("""CREATE TABLE big AS SELECT i % 4 AS seg, (i // 4) % 500 AS g, (i * 0.37) % 3 AS x,
                   1 + 0.5 * ((i * 0.37) % 3) + ((i // 4) % 500) % 7 * 0.1 + sin(i) AS y FROM range(200000) r(i)""")
    con.execute("CREATE TABLE models AS SELECT seg, lmm_model_agg(t, 'y ~ x + (1 + x | g)') AS model FROM big t GROUP BY seg")
    con.execute("""CREATE TABLE coefs AS SELECT seg, r.* FROM (SELECT seg, unnest(lmm_model_tidy(model)) AS r FROM models)""")
    worst, n = con.execute("""
        WITH fe AS (SELECT seg, max(estimate) FILTER (term = '(Intercept)') b0, max(estimate) FILTER (term = 'x') b1
                    FROM coefs WHERE effect = 'fixed' GROUP BY seg),
        re AS (SELECT seg, level, max(estimate) FILTER (term = '(Intercept)') u0, max(estimate) FILTER (term = 'x') u1
               FROM coefs WHERE effect = 'ran_vals' GROUP BY seg, level)
        SELECT max(abs(lmm_predict(m.model, b) - (fe.b0 + fe.b1 * b.x + re.u0 + re.u1 * b.x))), count(*)
        FROM (SELECT * FROM big ORDER BY random()) b JOIN models m USING (seg) JOIN fe USING (seg)
        JOIN re ON re.seg = b.seg AND re.level = CAST(b.g AS VARCHAR)""").fetchone()
    assert n == 200000
    assert worst < 1e-9


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

@pytest.fixture
def blob(con):
    return model_blob(con, "sleepstudy", "Reaction ~ Days + (Days | Subject)")


def error_of(con, sql, params=None):
    with pytest.raises(duckdb.Error) as e:
        con.execute(sql, params or []).fetchall()
    return str(e.value)


def test_wrong_kind_of_model_value(con):
    for value in ["'Reaction ~ Days'", "42", "[1, 2]"]:
        for sql in [f"SELECT lmm_predict({value}, s) FROM sleepstudy s",
                    f"SELECT * FROM lmm_tidy({value})"]:
            msg = error_of(con, sql)
            assert "must be a model value" in msg and "lmm_model_agg" in msg, msg


def test_damaged_model_values(con, blob):
    b = bytes(blob)
    future = bytearray(b)
    struct.pack_into("<I", future, 8, 6)
    wrong_magic = b"LMMMODEX" + b[8:]
    truncated = b[:-7]
    flipped = bytearray(b)
    flipped[32 + model_length(b) // 2] ^= 0x10  # in the model part (prediction never reads the statistics)
    cases = [(bytes(future), ["format version 6", "newer"]), (wrong_magic, ["not an lmm model"]),
             (truncated, ["truncated"]), (b[:20], ["truncated"]), (bytes(flipped), ["corrupt"]),
             (b"", ["not an lmm model"])]
    for value, needles in cases:
        for sql in ["SELECT lmm_predict(?::BLOB, s) FROM sleepstudy s", "SELECT * FROM lmm_tidy(?::BLOB)"]:
            msg = error_of(con, sql, [value])
            assert all(n in msg for n in needles), (needles, msg)


def test_missing_column_and_wrong_types(con, blob):
    con.execute("CREATE TABLE m AS SELECT ?::BLOB AS model", [blob])
    msg = error_of(con, "SELECT lmm_predict(m.model, d) FROM (SELECT Subject FROM sleepstudy) d, m")
    assert "column 'Days' not found" in msg and "Subject" in msg, msg
    # Without random effects the grouping column is not needed; with them it is.
    assert con.execute("SELECT count(lmm_predict(m.model, d, re := false)) FROM (SELECT Days FROM sleepstudy) d, m").fetchone()[0] == 180
    msg = error_of(con, "SELECT lmm_predict(m.model, d) FROM (SELECT Days FROM sleepstudy) d, m")
    assert "column 'Subject' not found" in msg, msg
    # A grouping column of another kind than at fit: an error, not silently "unseen".
    msg = error_of(con, "SELECT lmm_predict(m.model, d) FROM (SELECT Days, CAST(Subject AS VARCHAR) AS Subject FROM sleepstudy) d, m")
    assert "column 'Subject'" in msg and "VARCHAR" in msg, msg
    msg = error_of(con, "SELECT lmm_predict(m.model, d) FROM (SELECT 'three' AS Days, Subject FROM sleepstudy) d, m")
    assert "column 'Days'" in msg and "number" in msg, msg
    msg = error_of(con, "SELECT lmm_predict(m.model, 5) FROM m")
    assert "whole row" in msg, msg


def test_predict_works_on_read_only_database(tmp_path):
    db = str(tmp_path / "ro.duckdb")
    w = duckdb.connect(db)
    w.execute("CREATE TABLE s AS SELECT * FROM read_csv(?)", [str(EXT.parents[2] / "tests/fixtures/data/sleepstudy.csv")])
    w.close()
    ro = connect(db, access_mode="READ_ONLY")
    n, mean = ro.execute("""SELECT count(p), avg(p) FROM (SELECT lmm_predict_impl(m.model, s, true) AS p FROM s,
                            (SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)') AS model FROM s t) m)""").fetchone()
    avg_y = ro.execute("SELECT avg(Reaction) FROM s").fetchone()[0]
    assert n == 180 and abs(mean - avg_y) < 1e-6 * avg_y
    ro.close()


@pytest.mark.parametrize("table,formula,factors", [
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", [("plate", "plate"), ("sample", "sample")]),
    ("pastes", "strength ~ 1 + (1 | batch/cask)", [("batch", "batch"), ("cask:batch", "cask || ':' || batch")]),
])
def test_predictions_with_several_factors(con, table, formula, factors):
    # Every factor's BLUP of the row's level is added; a level a factor never
    # saw (a new cask in a seen batch, a new plate) contributes 0 for that factor only.
    con.execute(f"CREATE TABLE m AS SELECT lmm_model_agg(t, '{formula}') AS model FROM {table} t")
    tidy = rows(con, "SELECT * FROM lmm_tidy((SELECT model FROM m))")
    intercept = [r["estimate"] for r in tidy if r["effect"] == "fixed"][0]
    blup = {(r["group_var"], r["level"]): r["estimate"] for r in tidy if r["effect"] == "ran_vals"}
    con.execute(f"CREATE TABLE newrows AS SELECT * FROM {table} LIMIT 5")
    if table == "pastes":
        con.execute("INSERT INTO newrows VALUES (60.0, 'A', 'z', 'A:z'), (60.0, 'Q', 'a', 'Q:a')")
    else:
        con.execute("INSERT INTO newrows VALUES (25.0, 'zz', 'A'), (25.0, 'a', 'Z')")
    labels = ", ".join(f"{expr} AS f{i}" for i, (_, expr) in enumerate(factors))
    got = con.execute(f"SELECT lmm_predict(m.model, n), lmm_predict(m.model, n, re := false), {labels} FROM newrows n, m").fetchall()
    assert len(got) == 7
    unseen = 0
    for row in got:
        want = intercept
        for i, (name, _) in enumerate(factors):
            b = blup.get((name, str(row[2 + i])))
            unseen += b is None
            want += b or 0.0
        assert abs(row[0] - want) <= 1e-9 * abs(want), (row, want)
        assert abs(row[1] - intercept) <= 1e-12 * abs(intercept)
    assert unseen >= 2


def test_lmm_score_table_macro(con):
    # lmm_score(table, model_table): every row with its prediction, the same
    # numbers lmm_predict gives, the table's own columns kept.
    con.execute("CREATE TABLE pig_model AS SELECT lmm_model_agg(t, 'Weight ~ Time + (Time | Pig)') AS model FROM dietox t")
    con.execute("CREATE TABLE new_pigs AS SELECT Pig + (Pig = 4601)::INT * 5000 AS Pig, Time + 1 AS Time, Weight FROM dietox")
    cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM lmm_score('new_pigs', 'pig_model')").fetchall()]
    assert cols == ["Pig", "Time", "Weight", "prediction"]
    for re in (True, False):
        got = con.execute(f"""
            SELECT count(*), max(abs(s.prediction - lmm_predict(m.model, n, re := {str(re).lower()}))),
                   count(*) FILTER (WHERE s.prediction IS NULL)
            FROM lmm_score('new_pigs', 'pig_model', re := {str(re).lower()}) s
            JOIN new_pigs n USING (Pig, Time, Weight), pig_model m""").fetchone()
        assert got[0] == con.execute("SELECT count(*) FROM new_pigs").fetchone()[0]
        assert got[1] == 0.0 and got[2] == 0
    # the renamed pig (unseen) gets the population-level prediction
    unseen = con.execute("SELECT max(abs(s.prediction - p.prediction)) FROM lmm_score('new_pigs', 'pig_model') s "
                         "JOIN lmm_score('new_pigs', 'pig_model', re := false) p USING (Pig, Time, Weight) "
                         "WHERE s.Pig = 9601").fetchone()[0]
    assert unseen == 0.0
