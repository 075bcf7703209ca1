"""Fuzz tests: random formulas and random damage to model values, run through
the loaded extension in child processes (tests/sql/crash.py).

Seeded and bounded: LMM_FUZZ_SEED (default 20250601) picks the cases,
LMM_FUZZ_CASES (default 1500) is the number of cases of each test. Case i of
a test is generated from random.Random(f"{seed}:{test}:{i}") alone, so a
reported case is reproduced from its seed and index (and the SQL printed).

- test_fuzz_formulas: formulas from lme4's grammar (README "Model language")
  and broken ones (junk tokens, unbalanced parentheses, unicode, long and
  deep formulas, repeated segments, long products), over a table with
  numeric, DECIMAL, VARCHAR, ENUM, BOOLEAN, DATE and NULL-containing columns;
  each through lmm_fit_agg by REML and by ML, some through lmm_model_agg,
  lmm_predict and lmm_tidy.
- test_fuzz_model_values: valid models (one factor, crossed, nested, an
  interaction factor, categorical fixed effects, ML without ranef) damaged by
  bit flips, byte changes, truncation, extension, splicing two models, and
  length/count/index fields set to huge or off-by-one values, the checksum
  recomputed (our own implementation of docs/model-format.md) so that the
  parser's structural checks are what is tested; each through lmm_predict
  (with and without random effects) and lmm_tidy.

A case passes if every statement gives a result or an error that is lmm's
("lmm: ...", not "lmm: internal error", which is a caught panic, i.e. a bug)
or DuckDB's binder/parser error. It fails if the child crashes (a signal, a
Rust abort), hangs past the per-case limit (LMM_FUZZ_CASE_TIMEOUT, 30 s),
runs out of its 16 GiB address space, grows it by more than 8 GiB in one
case (see crash.DEFAULT_MEM for what a dependency reserves), or grows its peak
RSS by more than 1 GiB in one case (on a table of 120 rows and models of a few KB), or gives
any other error. Failures are grouped by cause, each with its smallest case.

Cases run in batches (hundreds per child), two children at once (2 cores);
when a child dies, its case is rerun alone to confirm and the batch resumes
in a new child. Each test stops starting children after LMM_FUZZ_BUDGET
seconds (default 120, a guard against a slow machine); unreached cases then count as a failure.

Measured on this machine (2 cores, 1500 formulas and 1500 model values):
test_fuzz_formulas ran its 2112 cases (3381 fit statements) in 26-33 s,
test_fuzz_model_values its 1500 damaged or forged models (4500 statements)
in about 8.5 s. Most cases take milliseconds; a few fits with many variance
parameters take seconds.
"""
import base64
import collections
import concurrent.futures
import os
import random
import re
import struct
import time

import pytest

import crash

SEED = int(os.environ.get("LMM_FUZZ_SEED", "20250601"))
CASES = int(os.environ.get("LMM_FUZZ_CASES", "1500"))
# A case runs up to five fits of one formula (REML, ML, Satterthwaite, a subset,
# a model); the slowest legitimate one met (an 81-parameter covariance on 95
# rows, 19,069 evaluations) takes 6.5 s a fit, so a case may take 30 s.
CASE_TIMEOUT = float(os.environ.get("LMM_FUZZ_CASE_TIMEOUT", "30"))
BUDGET = float(os.environ.get("LMM_FUZZ_BUDGET", "120"))  # a guard, not a target: about 35 s are used here
WORKERS = 2
RSS_GROWTH_LIMIT_KIB = 1 << 20  # 1 GiB of peak RSS in one case
VM_GROWTH_LIMIT_KIB = 8 << 20   # 8 GiB of peak address space in one case (calloc'd memory is not RSS;
                                # faer's gemm reserves ~1 GiB per thread here, see crash.DEFAULT_MEM)
MEM_CAP = crash.DEFAULT_MEM

pytestmark = pytest.mark.skipif(not crash.EXT.is_file(), reason=f"{crash.EXT} not built (run scripts/build.sh)")

# ---------------------------------------------------------------------------
# The data: 120 rows, every kind of column the model language meets
# ---------------------------------------------------------------------------

SETUP = [
    "CREATE TYPE mood AS ENUM ('lo', 'mid', 'hi')",
    """CREATE TABLE t AS SELECT
        ((i % 7) * 0.5 + sin(i * 0.7) + (i % 8) * 0.3)::DOUBLE AS y,
        cos(i * 1.3)::DOUBLE AS x1,
        ((i % 11) / 3.0)::DOUBLE AS x2,
        (i % 5)::INTEGER AS n,
        ((i % 13) * 0.25)::DECIMAL(8, 2) AS dec,
        'f' || (i % 3) AS f,
        (['lo', 'mid', 'hi'][1 + (i // 4) % 3])::mood AS e,
        (i % 2 = 0) AS b,
        DATE '2020-01-01' + (i % 10)::INTEGER AS dt,
        'g' || (i % 8) AS g,
        ((i * 7) // 5 % 5)::INTEGER AS h,
        (i % 6)::BIGINT AS k,
        CASE WHEN i % 9 = 0 THEN NULL ELSE sin(i * 0.1) END AS xn,
        CASE WHEN i % 17 = 0 THEN 'nan'::DOUBLE WHEN i % 19 = 0 THEN 'inf'::DOUBLE ELSE i * 0.01 END AS xinf,
        CASE WHEN i % 10 = 0 THEN NULL ELSE 'l' || (i % 4) END AS fn,
        1.0::DOUBLE AS c,
        NULL::DOUBLE AS allnull,
        (i % 3 + 0.5 * cos(i))::DOUBLE AS "my col",
        'u' || (i % 4) AS "ünï",
        ((i % 4) * 0.5)::FLOAT AS fl
      FROM range(120) r(i)""",
    # rows to predict: the fitted rows, unseen groups, NULLs in the grouping columns
    """CREATE TABLE pr AS SELECT * FROM t
       UNION ALL SELECT * REPLACE ('gz' AS g, 99 AS h, 99::BIGINT AS k, 'uz' AS "ünï") FROM t WHERE n = 0
       UNION ALL SELECT * REPLACE (NULL AS g, NULL AS h, NULL::BIGINT AS k, NULL AS fn) FROM t WHERE n = 1""",
]

NUMERIC = ["x1", "x2", "n", "dec", "xn", "xinf", "c", "allnull", "`my col`", "fl"]
CATEGORICAL = ["f", "e", "b", "fn", "g", "h", "k", "`ünï`"]
BAD = ["dt", "nope", "`no such`", "X1", "Y", "y", "``", "` `", '"x1"', "ü", "x1.", "._x", "𝔁"]
GROUPS = ["g", "h", "k", "f", "b", "e", "fn", "`ünï`"]
BAD_GROUPS = ["dt", "x1", "nope", "y", "c", "allnull", "xn", "dec"]
JUNK = ["(", ")", "|", "||", "~", "+", "-", "*", ":", "/", "0", "1", "2", "1.5", "..", "`", '"', "$",
        ",", "'", "ü", "→", "\u0000", "\x7f", "\t", "\n", "𝔁", "e+10", "x1", "((1|g))", "(", "(1 |",
        "| g)", "-1", "+0", "^2", "I(x1)", "%in%", "\u202e", "\ufeff", "a\u0301", "٣"]


def _pick(r, common, rare, p_rare=0.1):
    return r.choice(rare) if r.random() < p_rare else r.choice(common)


def _var(r, p_bad=0.05):
    if r.random() < p_bad:
        return r.choice(BAD)
    return r.choice(NUMERIC) if r.random() < 0.6 else r.choice(CATEGORICAL)


def _colon_term(r):
    return ":".join(_var(r) for _ in range(r.choice([1, 1, 1, 2, 2, 3])))


def _product(r):
    return "*".join(_colon_term(r) for _ in range(r.choice([1, 1, 1, 2, 2, 3])))


def _sum(r, max_terms=4):
    parts = []
    for j in range(r.randint(0, max_terms)):
        sign = "" if j == 0 else r.choice([" + ", " + ", " + ", " - ", "+", " -"])
        parts.append(sign + _product(r))
    return "".join(parts)


def _group(r):
    names = [_pick(r, GROUPS, BAD_GROUPS, 0.1) for _ in range(r.choice([1, 1, 1, 2, 2, 3]))]
    seps = [r.choice([":", "/"]) for _ in names[1:]]
    return names[0] + "".join(s + n for s, n in zip(seps, names[1:]))


def _bar(r):
    inner = r.choice(["1", "0 + x1", "x1", "1 + x1", "-1 + x1", "x1 + x2", "f", "0 + f", "x1:f", "b",
                      "1 + " + _sum(r, 2), _sum(r, 2), "0", "x1 - 1", "1 + n + dec"])
    inner = inner.strip() or "1"
    return f"({inner} {r.choice(['|', '|', '|', '||'])} {_group(r)})"


def grammar_formula(r):
    """A formula from lme4's grammar (often one lmm can fit)."""
    resp = _pick(r, ["y"] * 6 + ["x1", "`my col`", "n", "dec"], ["f", "dt", "b", "nope", "e", "g", "``"], 0.1)
    parts = []
    start = r.choice(["", "", "", "1 + ", "0 + ", "-1 + "])
    fixed = _sum(r)
    if fixed:
        parts.append(start + fixed)
    elif start:
        parts.append(start.rstrip(" +"))
    for _ in range(r.choice([0, 1, 1, 1, 2, 2, 3])):
        parts.append(_bar(r))
    if r.random() < 0.1:
        parts.append(r.choice(["- 1", "+ 0", "- x1", "- f"]).lstrip("+ "))
    rhs = r.choice([" + ", "+", " +\n "]).join(p for p in parts if p) or "1"
    return f"{resp} {r.choice(['~', '~', ' ~ '])} {rhs}"


def corrupt_formula(r, s):
    """Damage a formula: junk tokens, deleted or repeated spans, truncation."""
    for _ in range(r.randint(1, 3)):
        op = r.randrange(6)
        i = r.randint(0, len(s))
        if op == 0:
            s = s[:i] + r.choice(JUNK) + s[i:]
        elif op == 1 and s:
            j = r.randint(i, min(len(s), i + 5))
            s = s[:i] + s[j:]
        elif op == 2:
            j = r.randint(i, min(len(s), i + 12))
            s = s[:j] + s[i:j] * r.randint(1, 4) + s[j:]
        elif op == 3:
            s = s[:i]
        elif op == 4:
            s = s.replace(r.choice(["(", ")", "|", "~", "+"]), r.choice(["", "((", "))", "||", "~~", "|"]), 1)
        else:
            s = s[:i] + " ".join(r.choice(JUNK) for _ in range(r.randint(2, 6))) + s[i:]
    return s


def special_formula(r):
    """The edges: empty, deep, long, repeated, exponential."""
    kind = r.randrange(13)
    if kind == 0:
        return r.choice(["", " ", "\n", "~", "y ~", "~ x1", "y ~ ~ x1", "y", "()", "(1 | g)", "y ~ ()",
                         "y ~ (1 | g", "y ~ 1 | g)", "y ~ (|)", "y ~ (1 ||)", "y ~ x1 + (1 | g) ~ x2",
                         "y ~ (1 | (g))", "y ~ ((1 | g))", "y ~ (1 | g) (1 | h)", "y ~ (1 | g:)",
                         "y ~ (1 | /g)", "y ~ (1 | g/)", "y ~ (1 | g//h)", "`y ~ x1", "y ~ `x1 + (1|g)",
                         "y ~ 1 - (1 | g)", "y ~ -(1|g)", "y ~ 0 + (0 | g)", "y ~ (0 | g)", "y ~ (- 1 | g)"])
    if kind == 1:  # deep parentheses
        d = r.choice([2, 10, 100, 1000, 5000])
        return "y ~ " + "(" * d + "x1" + ")" * d + " + (1 | g)"
    if kind == 2:  # deep bars
        d = r.choice([2, 5, 50, 500])
        return "y ~ x1 + " + "(1 | " * d + "g" + ")" * d
    if kind == 3:  # a long sum
        n = r.choice([10, 100, 1000, 5000])
        return "y ~ " + " + ".join(_colon_term(r) for _ in range(n)) + " + (1 | g)"
    if kind == 4:  # a long product (2^n expansion)
        n = r.choice([2, 3, 5, 8, 12, 16, 20, 22, 26, 30])
        v = r.choice([["x1"], NUMERIC[:4], ["x1", "f"], [f"x{j}" for j in range(n)], ["Days"]])
        return "y ~ " + "*".join(v[j % len(v)] for j in range(n)) + " + (1 | g)"
    if kind == 5:  # repeated nesting segments
        n = r.choice([2, 3, 10, 100, 1000, 3000])
        v = r.choice([["g"], ["g", "h"], ["g", "h", "k"], ["nope"]])
        return f"y ~ x1 + (1 | {'/'.join(v[j % len(v)] for j in range(n))})"
    if kind == 6:  # a long interaction as a group
        n = r.choice([2, 3, 10, 100, 1000])
        v = r.choice([["g"], ["g", "h"], ["g", "h", "k", "f", "b"]])
        return f"y ~ x1 + (1 | {':'.join(v[j % len(v)] for j in range(n))})"
    if kind == 7:  # a long colon term in the fixed part
        n = r.choice([2, 10, 100, 1000])
        v = r.choice([["x1"], ["x1", "f"], CATEGORICAL, NUMERIC])
        return "y ~ " + ":".join(v[j % len(v)] for j in range(n)) + " + (1 | g)"
    if kind == 8:  # many bars
        n = r.choice([2, 10, 100, 1000])
        return "y ~ x1 + " + " + ".join(_bar(r) for _ in range(n))
    if kind == 9:  # unicode
        names = ["ü", "é", "𝔁", "日本", "\u202ex1", "x\u0301", "ﬁ", "Ⅸ", "٣", "ʼ", "\u00a0", "\u2028"]
        pieces = [r.choice(names + NUMERIC + CATEGORICAL) for _ in range(r.randint(1, 5))]
        return f"{r.choice(['y', 'ü', '`ünï`'])} ~ {' + '.join(pieces)} + (1 | {r.choice(names + GROUPS)})"
    if kind == 10:  # very long
        n = r.choice([10_000, 100_000, 1_000_000])
        return "y ~ x1 + (1 | g)" + " " * n + r.choice(["", "+", "$", "+ x2"])
    if kind == 11:  # many quoted names
        n = r.choice([1, 10, 1000])
        return "y ~ " + " + ".join(f"`{r.choice(['x1', 'my col', 'a b', '', ' '])}`" for _ in range(n)) + " + (1|g)"
    # random bytes of the formula alphabet
    alphabet = "yx1fg ()|~+-*:/01`\""
    return "".join(r.choice(alphabet) for _ in range(r.randint(1, 80)))


def make_formula(r):
    u = r.random()
    if u < 0.55:
        return grammar_formula(r)
    if u < 0.85:
        return corrupt_formula(r, grammar_formula(r))
    return special_formula(r)


def formula_cases(seed, n):
    """Per formula: the fits (REML, ML, sometimes more), sometimes model/predict/tidy."""
    cases = []
    for i in range(n):
        r = random.Random(f"{seed}:formulas:{i}")
        f = make_formula(r)
        fits = [["SELECT unnest(lmm_fit_agg(t, ?), recursive := true) FROM t", [f]],
                ["SELECT unnest(lmm_fit_agg(t, ?, {'method': 'ML'}), recursive := true) FROM t", [f]]]
        if r.random() < 0.1:
            fits.append(["SELECT g, lmm_fit_agg(t, ?, {'ranef': false}) FROM t GROUP BY g", [f]])
        if r.random() < 0.1:
            fits.append(["SELECT * FROM lmm_fit('t', ?, ddf := 'Satterthwaite')", [f]])
        if r.random() < 0.05:
            fits.append(["SELECT unnest(lmm_fit_agg(t, ?), recursive := true) FROM "
                         "(SELECT * FROM t WHERE xn IS NOT NULL) t", [f]])
        cases.append({"label": f"formula case {i}", "formula": f, "keep_going": True, "sql": fits})
        if r.random() < 0.4:
            cases.append({"label": f"formula case {i} (model)", "formula": f, "sql": [
                "DROP TABLE IF EXISTS m",
                ["CREATE TEMP TABLE m AS SELECT lmm_model_agg(t, ?) AS model FROM t", [f]],
                "SELECT sum(lmm_predict(m.model, d)) FROM pr d, m",
                "SELECT sum(lmm_predict(m.model, d, re := false)) FROM pr d, m",
                "SELECT * FROM lmm_tidy((SELECT model FROM m))",
            ]})
    return cases


# ---------------------------------------------------------------------------
# docs/model-format.md, implemented here: checksum and a walker that records
# where every field of a model value is
# ---------------------------------------------------------------------------

M64 = (1 << 64) - 1
K1 = 0x9E3779B97F4A7C15
K2 = 0xC2B2AE3D27D4EB4F


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def model_checksum(payload):
    a, b = 0x243F6A8885A308D3, 0x13198A2E03707344
    full = len(payload) // 16 * 16
    for off in range(0, full, 16):
        x, y = struct.unpack_from("<QQ", payload, off)
        a = _rotl(((a ^ x) * K1) & M64, 29)
        b = _rotl(((b ^ y) * K2) & M64, 31)
    for i, c in enumerate(payload[full:]):
        a = _rotl(((a ^ (c << (8 * (i % 8)))) * K1) & M64, 29)
    h = a ^ _rotl(b, 17) ^ ((len(payload) * K2) & M64)
    h ^= h >> 33
    h = (h * K1) & M64
    h ^= h >> 29
    return h


def model_part(blob):
    """The model part of a value (docs/model-format.md): without the statistics section."""
    flags, = struct.unpack_from("<I", blob, 12)
    payload = blob[32:]
    if flags & 1:
        n, = struct.unpack_from("<Q", payload, len(payload) - 8)
        payload = payload[:len(payload) - 8 - n]
    return bytes(payload)


def seal(payload, version=2, flags=0):
    """A model value around `payload`: header with its length and checksum."""
    payload = bytes(payload)
    return b"LMMMODEL" + struct.pack("<IIQQ", version, flags, model_checksum(payload), len(payload)) + payload


class Walker:
    """Reads a payload as the format says, recording each field as
    (offset in the payload, size, kind, name). Kinds: len (a str length),
    count32/count64, u8, f64, i64, var (a variable index), level (a level
    index, 0xFFFFFFFF: numeric), form (keys form), tag (a level key's part
    tag), bytes (a str's content)."""

    def __init__(self, payload):
        self.b = bytes(payload)
        self.pos = 0
        self.fields = []

    def _take(self, n, kind, name, fmt=None):
        if self.pos + n > len(self.b):
            raise ValueError(f"model ends inside {name}")
        off = self.pos
        self.pos += n
        self.fields.append((off, n, kind, name))
        return struct.unpack_from(fmt, self.b, off)[0] if fmt else None

    def u8(self, name, kind="u8"):
        return self._take(1, kind, name, "<B")

    def u32(self, name, kind):
        return self._take(4, kind, name, "<I")

    def u64(self, name, kind):
        return self._take(8, kind, name, "<Q")

    def str(self, name):
        n = self.u32(name, "len")
        self._take(n, "bytes", name)
        return self.b[self.pos - n:self.pos].decode()

    def f64s(self, name):
        n = self.u64(name, "count64")
        for _ in range(n):
            self._take(8, "f64", name)
        return n

    def key(self, name, n):
        end = self.pos + n
        while self.pos < end:
            tag = self.u8(name, "tag")
            if tag == 1:
                self._take(8, "i64", name)
            elif tag == 2:
                self._take(8, "f64", name)
            elif tag == 3:
                self._take(self.u32(name, "len"), "bytes", name)
            elif tag == 4:
                self.u8(name)
            else:
                raise ValueError(f"bad key tag {tag}")
        assert self.pos == end

    def keys(self, name):
        n = self.u64(name, "count64")
        form = self.u8(name, "form")
        for _ in range(n):
            if form == 1:
                self._take(8, "i64", name)
            else:
                self.key(name, self.u32(name, "len"))
        return n

    def col(self, name):
        self.str(name)
        for _ in range(self.u32(name, "count32")):
            self.u32(name, "var")
            self.u32(name, "level")

    def walk(self):
        self.str("formula")
        self.u8("method")
        nvars = self.u32("variables", "count32")
        for _ in range(nvars):
            self.str("variable name")
            self.str("variable type")
            self.u8("variable flags")
            self.u8("variable key tag")
            self.keys("variable levels")
        for _ in range(self.u32("fixed", "count32")):
            self.col("fixed column")
        self.f64s("beta")
        for _ in range(self.u32("factors", "count32")):
            self.str("factor name")
            for _ in range(self.u32("factor vars", "count32")):
                self.u32("factor var", "var")
            for _ in range(self.u32("factor terms", "count32")):
                self.col("factor term")
            nl = self.keys("factor levels")
            self.f64s("blups")
            if self.u8("has cond sd"):
                self.f64s("cond sd")
        for part in ("head", "tail"):
            for _ in range(self.u32(f"{part} rows", "count32")):
                self.str("row effect")
                for name in ("group_var", "level", "term"):
                    if self.u8(f"row {name} flag"):
                        self.str(f"row {name}")
                mask = self.u8("row mask")
                for i in range(7):
                    if mask >> i & 1:
                        self._take(8, "f64", "row value")
        if self.pos != len(self.b):
            raise ValueError(f"{len(self.b) - self.pos} bytes after the model")
        return self.fields


class Writer:
    """Writes a payload as docs/model-format.md lays it out."""

    def __init__(self):
        self.b = bytearray()

    def u8(self, v):
        self.b += struct.pack("<B", v & 0xFF)

    def u32(self, v):
        self.b += struct.pack("<I", v & 0xFFFFFFFF)

    def u64(self, v):
        self.b += struct.pack("<Q", v & M64)

    def str(self, text):
        data = text.encode() if isinstance(text, str) else bytes(text)
        self.u32(len(data))
        self.b += data

    def f64s(self, values):
        self.u64(len(values))
        self.b += struct.pack(f"<{len(values)}d", *values)

    def keys(self, keys):
        self.u64(len(keys))
        if keys and all(len(k) == 9 and k[0] == 1 for k in keys):
            self.u8(1)
            for k in keys:
                self.b += k[1:]
        else:
            self.u8(0)
            for k in keys:
                self.str(k)

    def col(self, name, parts):
        self.str(name)
        self.u32(len(parts))
        for v, l in parts:
            self.u32(v)
            self.u32(l)


def key_part(tag, value):
    """One part of a level key (format: tag 1 i64, 2 f64, 3 text, 4 bool)."""
    if tag in (1, 2) and not isinstance(value, (int, float)):
        value = sum(str(value).encode())  # a number for a text level (a wrong-tag key)
    if tag == 1:
        return b"\x01" + struct.pack("<q", int(value))
    if tag == 2:
        return b"\x02" + struct.pack("<d", float(value))
    if tag == 3:
        data = str(value).encode()
        return b"\x03" + struct.pack("<I", len(data)) + data
    return b"\x04" + bytes([1 if value else 0])


# The table's columns a forged model may name: (name, type at fit, key tag, level values).
FORGE_VARS = [
    ("y", "DOUBLE", 0, None), ("x1", "DOUBLE", 0, None), ("n", "INTEGER", 1, list(range(5))),
    ("f", "VARCHAR", 3, ["f0", "f1", "f2"]), ("e", "mood", 3, ["lo", "mid", "hi"]),
    ("b", "BOOLEAN", 4, [False, True]), ("g", "VARCHAR", 3, [f"g{i}" for i in range(8)]),
    ("h", "INTEGER", 1, list(range(5))), ("k", "BIGINT", 1, list(range(6))),
    ("fn", "VARCHAR", 3, ["l0", "l1", "l2", "l3"]), ("ünï", "VARCHAR", 3, ["u0", "u1", "u2", "u3"]),
    ("fl", "FLOAT", 2, [0.0, 0.5, 1.0, 1.5]), ("dt", "DATE", 0, None), ("nope", "DOUBLE", 0, None),
]


def forge(r):
    """A structurally valid model value with random (often inconsistent or
    extreme) contents: it passes the checksum and the reader's bounds, so
    what is tested is what prediction and the tidy table do with it."""
    big = r.random() < 0.05
    nv = r.randint(0, 12 if big else 6)
    chosen = [r.choice(FORGE_VARS) for _ in range(nv)]
    vars_ = []
    for name, type_name, tag, values in chosen:
        categorical = values is not None and r.random() < 0.9 or r.random() < 0.05
        levels = []
        if categorical and values is not None:
            n_extra = r.choice([0, 0, 1, 10] + ([2000, 2100, 5000] if big else []))
            vals = list(values) + ([f"extra{j}" for j in range(n_extra)] if tag == 3 else
                                   [1000 + j for j in range(n_extra)] if tag in (1, 2) else [])
            if r.random() < 0.2:
                r.shuffle(vals)
            use_tag = tag if r.random() < 0.9 else r.choice([1, 2, 3, 4])
            levels = [key_part(use_tag, v if use_tag == tag else (j if use_tag != 3 else str(j)))
                      for j, v in enumerate(vals)]
            if r.random() < 0.05:
                levels = levels + levels[:3]  # duplicate keys
        key_tag = tag if categorical and r.random() < 0.9 else r.choice([0, 1, 2, 3, 4, 5, 0xFF])
        flags = (1 if r.random() < 0.15 else 0) | (2 if r.random() < 0.3 else 0) | (4 if categorical else 0)
        if r.random() < 0.05:
            flags = r.randrange(256)
        vars_.append((name if r.random() < 0.95 else r.choice(["", "Y", "X1", "ü", "a" * 300]),
                      type_name, flags, key_tag, levels))

    def part(v):
        levels = vars_[v][4]
        if levels and r.random() < 0.7:
            return (v, r.randrange(len(levels)))
        return (v, 0xFFFFFFFF)

    def column():
        k = r.choice([0, 1, 1, 1, 2, 2, 3] + ([4, 6] if big else []))
        parts = [part(r.randrange(nv)) for _ in range(k)] if nv else []
        if r.random() < 0.03 and nv:
            parts.append(parts[0] if parts else part(0))  # the same part twice
        return "c" + "".join(f"{v}.{l}" for v, l in parts), parts

    dense = big and r.random() < 0.5
    if dense:
        # many categorical variables of 2048 levels and a fixed column per
        # pair: each pair's coefficient table has 2048² entries
        nv = r.choice([4, 8, 17])
        vars_ = [(FORGE_VARS[3 + j % 8][0], "VARCHAR", 4, 3, [key_part(3, f"v{j}l{i}") for i in range(2048)])
                 for j in range(nv)]
        pairs = [(a, b) for a in range(nv) for b in range(a + 1, nv)]

        def column():
            a, b = pairs.pop() if pairs else (0, 1)
            return f"p{a}.{b}", [(a, 1), (b, 1)]

    w = Writer()
    w.str(r.choice(["y ~ x1 + (1 | g)", "", "forged"]))
    w.u8(r.choice([0, 1]))
    w.u32(nv)
    for name, type_name, flags, key_tag, levels in vars_:
        w.str(name)
        w.str(type_name)
        w.u8(flags)
        w.u8(key_tag)
        w.keys(levels)
    p = nv * (nv - 1) // 2 if dense else r.choice([0, 1, 2, 3, 5] + ([50, 400] if big else []))
    w.u32(p)
    for _ in range(p):
        w.col(*column())
    w.f64s([r.choice([0.5, -1.0, 2.0, float("nan"), 1e300]) for _ in range(p)])
    nf = r.choice([0, 1, 1, 2, 3] + ([4] if big else []))
    w.u32(nf)
    for _ in range(nf):
        fv = [r.randrange(nv) for _ in range(r.choice([1, 1, 1, 2, 3, 0]))] if nv else []
        w.str(":".join(vars_[v][0] for v in fv) or "factor")
        w.u32(len(fv))
        for v in fv:
            w.u32(v)
        q = r.choice([0, 1, 1, 2, 3])
        w.u32(q)
        for _ in range(q):
            w.col(*column())
        # levels: one part per grouping column, of that column's tag (mostly)
        nl = r.choice([0, 1, 3, 8, 50] + ([20_000] if big else []))
        keys = []
        for j in range(nl):
            key = b""
            for v in fv:
                name = vars_[v][0]
                info = next((c for c in FORGE_VARS if c[0] == name), None)
                tag = info[2] if info and info[2] and r.random() < 0.95 else r.choice([1, 2, 3, 4])
                vals = info[3] if info and info[3] else [j]
                key += key_part(tag, vals[j % len(vals)] if r.random() < 0.8 else j)
            if not fv or r.random() < 0.02:
                key += key_part(1, j)
            keys.append(key)
        w.keys(keys)
        w.f64s([0.1 * (j % 7) for j in range(q * nl)])
        if r.random() < 0.5:
            w.u8(1)
            w.f64s([1.0] * (q * nl))
        else:
            w.u8(0)
    for _ in range(2):
        rows = r.choice([0, 1, 3])
        w.u32(rows)
        for _ in range(rows):
            w.str(r.choice(["fixed", "ran_pars", "fit", "ran_vals"]))
            for _ in range(3):
                if r.random() < 0.5:
                    w.u8(1)
                    w.str(r.choice(["(Intercept)", "g", "", "x" * 100]))
                else:
                    w.u8(0)
            mask = r.randrange(256) & 0x7F
            w.u8(mask)
            for i in range(7):
                if mask >> i & 1:
                    w.b += struct.pack("<d", r.choice([1.0, float("nan"), -float("inf")]))
    kind = " (dense pairs)" if dense else " (big)" if big else ""
    return seal(w.b), f"forged{kind}: {nv} vars, {p} fixed columns, {nf} factors"


BASE_MODELS = [
    ("one factor", "y ~ x1 + (1 + x1 | g)", "{}"),
    ("crossed", "y ~ x1 + (1 | g) + (1 | h)", "{}"),
    ("nested", "y ~ x2 + (1 | g/f)", "{}"),
    ("categorical fixed", "y ~ x1 * f + b + e + n + dec + (1 | k)", "{}"),
    ("uncorrelated ML no ranef", "y ~ x1 + (x1 || g)", "{'method': 'ML', 'ranef': false}"),
    ("interaction factor, unicode", 'y ~ f + `my col` + (1 | f:`ünï`)', "{}"),
    ("factor slope", "y ~ x1 + (0 + f | g) + (1 | b)", "{}"),
]


def aggregate_base_models(aggregate):
    """`aggregate` (lmm_model_agg, lmm_stats_agg) of each base model in a child; the values (bytes) by name."""
    code = (
        "import base64\n"
        f"models = {BASE_MODELS!r}\n"
        "result = {name: base64.b64encode(con.execute(\n"
        f"    f'SELECT {aggregate}(t, ?, {{opts}}) FROM t', [formula]).fetchone()[0]).decode()\n"
        "    for name, formula, opts in models}\n"
    )
    res = crash.run_snippet(code, setup=SETUP, timeout=60)
    crash.assert_clean(res, error=False)
    return {k: base64.b64decode(v) for k, v in res.value.items()}


def base_models(keep_statistics=False):
    """Fit the base models in a child; their values (bytes) by name."""
    values = aggregate_base_models("lmm_model_agg")
    if keep_statistics:
        return values
    # The model part only (resealed without statistics): what prediction reads.
    return {k: seal(model_part(v)) for k, v in values.items()}


HUGE32 = [0, 1, 2, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x1000_0000, 0x0100_0000]
HUGE64 = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 40, (1 << 61), (1 << 63), M64, M64 - 1,
          (1 << 64) // 8, (1 << 64) // 9 + 1]
SPECIAL_F64 = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 0.0, -0.0, 5e-324, 1e-300]


def mutate(r, blobs):
    """One damaged model value from the valid ones; (value, description)."""
    names = sorted(blobs)
    name = r.choice(names)
    blob = blobs[name]
    payload = bytearray(blob[32:])
    fields = Walker(payload).walk()
    desc = [name]
    fix_len, fix_sum, version, flags = True, True, 2, 0
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        op = r.randrange(12)
        if not payload:
            op = 8
        if op == 0:  # bit flips
            for _ in range(r.randint(1, 4)):
                i = r.randrange(len(payload))
                payload[i] ^= 1 << r.randrange(8)
            desc.append("bit flips")
        elif op == 1:  # byte changes
            for _ in range(r.randint(1, 4)):
                i = r.randrange(len(payload))
                payload[i] = r.choice([0, 0xFF, 0x80, 0x7F, r.randrange(256)])
            desc.append("byte changes")
        elif op in (2, 3):  # a length or count field: huge, off by one, zero
            cands = [f for f in fields if f[2] in ("len", "count32", "count64") and f[0] + f[1] <= len(payload)]
            if not cands:
                continue
            off, size, kind, fname = r.choice(cands)
            fmt = "<I" if size == 4 else "<Q"
            old = struct.unpack_from(fmt, payload, off)[0]
            pool = HUGE32 if size == 4 else HUGE64
            new = r.choice(pool + [old + 1, old - 1 if old else 1, old * 2, old + 1000])
            new &= (1 << (8 * size)) - 1
            struct.pack_into(fmt, payload, off, new)
            desc.append(f"{kind} {fname} at {off}: {old} -> {new}")
        elif op == 4:  # an index field: variable or level
            cands = [f for f in fields if f[2] in ("var", "level") and f[0] + f[1] <= len(payload)]
            if cands:
                off, size, kind, fname = r.choice(cands)
                old = struct.unpack_from("<I", payload, off)[0]
                new = r.choice([0xFFFFFFFF, 0xFFFFFFFE, old + 1, old + 2, 0, 1, 2, 3, 1 << 20, 0x80000000])
                struct.pack_into("<I", payload, off, new & 0xFFFFFFFF)
                desc.append(f"{kind} {fname} at {off}: {old} -> {new & 0xFFFFFFFF}")
        elif op == 5:  # a tag, form, flag or method byte
            cands = [f for f in fields if f[1] == 1 and f[0] < len(payload)]
            if not cands:
                continue
            off, _, kind, fname = r.choice(cands)
            old = payload[off]
            payload[off] = r.choice([0, 1, 2, 3, 4, 5, 7, 0xFF, old ^ 1])
            desc.append(f"{kind} {fname} at {off}: {old} -> {payload[off]}")
        elif op == 6:  # a number: NaN, inf, huge
            cands = [f for f in fields if f[2] in ("f64", "i64") and f[0] + 8 <= len(payload)]
            if not cands:
                continue
            off, _, kind, fname = r.choice(cands)
            if kind == "f64":
                struct.pack_into("<d", payload, off, r.choice(SPECIAL_F64))
            else:
                struct.pack_into("<q", payload, off, r.choice([-(1 << 63), (1 << 63) - 1, -1, 0, 1 << 40]))
            desc.append(f"{kind} {fname} at {off}")
        elif op == 7:  # truncation (the header fixed, or not)
            cut = r.randrange(len(payload) + 1)
            del payload[cut:]
            fix_len = r.random() < 0.8
            desc.append(f"truncated to {cut}" + ("" if fix_len else " (length not fixed)"))
        elif op == 8:  # extension
            extra = r.choice([bytes(r.randrange(256) for _ in range(r.randint(1, 64))),
                              bytes(payload[-r.randint(1, max(1, len(payload))):]), b"\0" * r.randint(1, 9)])
            payload += extra
            desc.append(f"extended by {len(extra)}")
        elif op == 9:  # splice with another model, at a field boundary or anywhere
            other = bytearray(blobs[r.choice(names)][32:])
            if r.random() < 0.5:
                i, j = r.randrange(len(payload) + 1), r.randrange(len(other) + 1)
            else:
                ofields = Walker(other).walk()
                fa = r.choice(fields)
                same = [f for f in ofields if f[3] == fa[3] and f[2] == fa[2]] or ofields
                i, j = fa[0], r.choice(same)[0]
            payload = payload[:i] + other[j:]
            desc.append(f"spliced at {i} with another model at {j}")
        elif op == 10:  # insert or delete bytes in the middle
            i = r.randrange(len(payload) + 1)
            if r.random() < 0.5:
                del payload[i:i + r.randint(1, 16)]
                desc.append(f"deleted bytes at {i}")
            else:
                payload[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 16)))
                desc.append(f"inserted bytes at {i}")
        else:  # the header: version, flags, checksum, length
            what = r.randrange(4)
            if what == 0:
                version = r.choice([0, 3, 0xFFFFFFFF])
                desc.append(f"version {version}")
            elif what == 1:
                fix_sum = False
                desc.append("checksum not fixed")
            elif what == 2:
                fix_len = False
                desc.append("length not fixed")
            else:
                flags = r.choice([1, 0x80000000, 0xFFFFFFFF])
                desc.append(f"flags {flags:#x}")
        fields = [f for f in fields if f[0] + f[1] <= len(payload)] or [(0, 0, "bytes", "formula")]
    value = bytearray(seal(payload, version=version, flags=flags))
    if not fix_sum:
        struct.pack_into("<Q", value, 16, model_checksum(bytes(blob[32:])))
    if not fix_len:
        struct.pack_into("<Q", value, 24, len(blob) - 32)
    return bytes(value), "; ".join(desc)


def model_cases(seed, n, blobs):
    cases = []
    for i in range(n):
        r = random.Random(f"{seed}:models:{i}")
        value, desc = forge(r) if r.random() < 0.25 else mutate(r, blobs)
        p = crash.b64(value)
        hexed = {"value_hex": value.hex()} if len(value) <= 400 else {}
        cases.append({"label": f"model case {i}: {desc}", "value_len": len(value), **hexed, "keep_going": True, "sql": [
            ["SELECT sum(lmm_predict(?::BLOB, d)) FROM pr d", [p]],
            ["SELECT sum(lmm_predict(?::BLOB, d, re := false)) FROM pr d", [p]],
            ["SELECT * FROM lmm_tidy(?::BLOB)", [p]],
        ]})
    return cases


# ---------------------------------------------------------------------------
# Running and judging
# ---------------------------------------------------------------------------

ACCEPTED_TYPES = {"BinderException", "ParserException"}


def judge(outcome):
    """None if the case is fine, else its failure class (a short string)."""
    if outcome is None:
        return "not run (time budget exhausted)"
    if not outcome.completed:
        if outcome.timed_out:
            return f"hang (over {CASE_TIMEOUT:g} s)"
        # an allocation's size is kept when large (it names the culprit), else N
        sig = re.sub(r"\d+", lambda m: m.group() if len(m.group()) >= 7 else "N",
                     crash.crash_signature(outcome.stderr))
        return f"crash ({outcome.signal or f'exit {outcome.returncode}'}): {sig}"
    if outcome.vm_growth_kib > VM_GROWTH_LIMIT_KIB:
        return f"runaway memory (address space grew by over {VM_GROWTH_LIMIT_KIB >> 10} MiB in one case)"
    if outcome.rss_growth_kib > RSS_GROWTH_LIMIT_KIB:
        return f"runaway memory (peak RSS grew by over {RSS_GROWTH_LIMIT_KIB >> 10} MiB in one case)"
    for s in outcome.steps:
        if s.ok:
            continue
        if crash.is_memory_error(s.error) or s.error_type == "MemoryError":
            return f"runaway memory: {s.error[:160]}"
        if crash.is_internal_error(s.error):
            text = crash.strip_duckdb_prefix(s.error).split("\n")[0]
            # the panic's message and place, not its numbers ("index out of bounds: the len is 3 ...")
            return re.sub(r"(len|index) is \d+", r"\1 is N", text)[:200]
        if crash.is_lmm_error(s.error) or s.error_type in ACCEPTED_TYPES:
            continue
        return f"non-lmm error ({s.error_type}): {s.error.splitlines()[0][:160]}"
    return None


def run_sharded(cases):
    """Run the cases in WORKERS children at once; outcomes in case order."""
    deadline = time.monotonic() + BUDGET
    shards = [list(range(w, len(cases), WORKERS)) for w in range(WORKERS)]
    outcomes = [None] * len(cases)

    def run(idx):
        batch = crash.run_batch([cases[i] for i in idx], setup=SETUP, case_timeout=CASE_TIMEOUT,
                                mem_bytes=MEM_CAP, deadline=deadline)
        return idx, batch

    exits = []
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for idx, batch in pool.map(run, shards):
            for i, o in zip(idx, batch):
                outcomes[i] = o
            exits.extend(batch.exits)
    return outcomes, exits


def case_sql(case):
    lines = []
    for st in case["sql"]:
        sql, params = (st, []) if isinstance(st, str) else st
        shown = [p if not isinstance(p, dict) else f"<BLOB of {case.get('value_len')} bytes>" for p in params]
        lines.append(f"    {sql}" + (f"   -- params {shown!r}"[:400] if shown else ""))
    return "\n".join(lines)


def report(cases, outcomes, exits, test):
    """The failures grouped by class, each with its shortest case."""
    classes = collections.defaultdict(list)
    for case, o in zip(cases, outcomes):
        c = judge(o)
        if c is not None:
            classes[c].append((case, o))
    lines = []
    for c, items in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        if c.startswith("not run"):
            lines.append(f"* {c}: {len(items)} case(s)")
            continue
        items.sort(key=lambda co: (len(co[0].get("formula", "")), co[0].get("value_len", 0)))
        lines.append(f"* {c}: {len(items)} case(s); the smallest:")
        for case, o in items[:3]:
            step = next((s for s in (o.steps or []) if not s.ok), None)
            lines.append(f"  - LMM_FUZZ_SEED={SEED} {test} {case['label']}\n"
                         + (f"    formula: {case['formula'][:300]!r}\n" if "formula" in case else "")
                         + f"{case_sql(case)}\n"
                         + (f"    value: from_hex('{case['value_hex']}')\n" if "value_hex" in case else "")
                         + f"    -> {step.error[:400] if step and o.completed else o.describe()[:600]}")
    for f in exits:
        lines.append(f"* a child ran all its cases and then exited with {f['returncode']}: {f['stderr'][-300:]!r}")
    return lines


def test_checksum_and_walker_match_lmm():
    # Our checksum and reader of docs/model-format.md agree with lmm's writer
    # on every base model; otherwise every mutation below would be refused
    # by the checksum and test nothing.
    blobs = base_models()
    assert len(blobs) == len(BASE_MODELS)
    for name, blob in blobs.items():
        assert blob[:8] == b"LMMMODEL", name
        version, _, csum, length = struct.unpack_from("<IIQQ", blob, 8)
        assert version == 2 and length == len(blob) - 32, name
        assert model_checksum(blob[32:]) == csum, name
        fields = Walker(blob[32:]).walk()
        assert sum(f[1] for f in fields) == len(blob) - 32, name
        assert seal(blob[32:]) == blob, name


def test_fuzz_formulas():
    t0 = time.monotonic()
    cases = formula_cases(SEED, CASES)
    outcomes, exits = run_sharded(cases)
    failures = report(cases, outcomes, exits, "test_fuzz_formulas")
    spent = time.monotonic() - t0
    fits = sum(len(c["sql"]) for c in cases if c.get("keep_going"))
    print(f"{CASES} formulas, {len(cases)} cases, {fits} fit statements in {spent:.1f} s")
    assert not failures, f"{sum(l.startswith('*') for l in failures)} failure class(es) in {spent:.1f} s:\n" + "\n".join(failures)


def test_fuzz_model_values():
    t0 = time.monotonic()
    blobs = base_models()
    cases = model_cases(SEED, CASES, blobs)
    outcomes, exits = run_sharded(cases)
    failures = report(cases, outcomes, exits, "test_fuzz_model_values")
    spent = time.monotonic() - t0
    errors = sum(1 for o in outcomes if o is not None and o.completed and o.error is not None)
    print(f"{len(cases)} damaged models in {spent:.1f} s; {errors} refused with an error")
    # Most damaged values must be refused: a fuzzer whose mutations all pass
    # (say, because the checksum were wrong) would test nothing.
    assert errors >= len(cases) // 2, f"only {errors} of {len(cases)} damaged values gave an error"
    assert not failures, f"{sum(l.startswith('*') for l in failures)} failure class(es) in {spent:.1f} s:\n" + "\n".join(failures)


# ---------------------------------------------------------------------------
# The statistics section: damaged bodies (checksums fixed, so they are parsed)
# given to every inference function
# ---------------------------------------------------------------------------

STATS_CASES = int(os.environ.get("LMM_FUZZ_STATS_CASES", "120"))


def reseal_statistics(blob, body):
    """`blob` with its statistics body replaced (section checksum, trailer and header length fixed)."""
    payload = blob[32:]
    n, = struct.unpack_from("<Q", payload, len(payload) - 8)
    model = payload[:len(payload) - 8 - n]
    section = struct.pack("<Q", model_checksum(body)) + body
    payload = model + section + struct.pack("<Q", len(section))
    flags, = struct.unpack_from("<I", blob, 12)
    return seal(model, version=2, flags=flags)[:32 - 8] + struct.pack("<Q", len(payload)) + payload


def mutate_statistics(r, blobs):
    name = r.choice(sorted(blobs))
    blob = blobs[name]
    payload = blob[32:]
    n, = struct.unpack_from("<Q", payload, len(payload) - 8)
    body = bytearray(payload[len(payload) - 8 - n + 8:len(payload) - 8])
    desc = [name] + damage(r, body)
    return reseal_statistics(blob, bytes(body)), "; ".join(desc)


def damage(r, body):
    """One to three random damages to `body` (in place): flipped bits, special
    doubles, huge counts, deleted bytes; their descriptions."""
    desc = []
    for _ in range(r.choice([1, 1, 2, 3])):
        op = r.randrange(5)
        i = r.randrange(len(body))
        if op == 0:
            body[i] ^= 1 << r.randrange(8)
            desc.append(f"bit flip at {i}")
        elif op == 1 and i + 8 <= len(body):
            struct.pack_into("<d", body, i // 8 * 8 if i // 8 * 8 + 8 <= len(body) else i, r.choice(SPECIAL_F64))
            desc.append(f"special double near {i}")
        elif op == 2 and i + 8 <= len(body):
            struct.pack_into("<Q", body, i, r.choice(HUGE64))
            desc.append(f"u64 at {i}")
        elif op == 3 and i + 4 <= len(body):
            struct.pack_into("<I", body, i, r.choice(HUGE32))
            desc.append(f"u32 at {i}")
        else:
            del body[i:i + r.randint(1, 16)]
            desc.append(f"deleted bytes at {i}")
    return desc


def test_fuzz_statistics_sections():
    t0 = time.monotonic()
    blobs = base_models(keep_statistics=True)
    cases = []
    for i in range(STATS_CASES):
        r = random.Random(f"{SEED}:stats:{i}")
        value, desc = mutate_statistics(r, blobs)
        p = crash.b64(value)
        base = crash.b64(blobs[desc.split(";")[0]])
        cases.append({"label": f"statistics case {i}: {desc}", "value_len": len(value), "keep_going": True, "sql": [
            ["SELECT * FROM lmm_vcov(?::BLOB)", [p]],
            ["SELECT * FROM lmm_confint(?::BLOB, method := 'Wald')", [p]],
            ["SELECT * FROM lmm_anova(?::BLOB)", [p]],
            ["SELECT * FROM lmm_lrt(?::BLOB, ?::BLOB, refit := false)", [p, base]],
            ["SELECT * FROM lmm_bootstrap(?::BLOB, 3)", [p]],
            ["SELECT * FROM lmm_confint(?::BLOB)", [p]],
            ["SELECT lmm_summary(?::BLOB)", [p]],
            ["SELECT * FROM lmm_tidy(?::BLOB)", [p]],
        ]})
    outcomes, exits = run_sharded(cases)
    failures = report(cases, outcomes, exits, "test_fuzz_statistics_sections")
    spent = time.monotonic() - t0
    # lmm_vcov reads the whole section: most damage must be refused there
    errors = sum(1 for o in outcomes if o is not None and o.completed and o.steps and not o.steps[0].ok)
    print(f"{len(cases)} damaged statistics in {spent:.1f} s; lmm_vcov refused {errors}")
    assert errors >= len(cases) // 4, f"only {errors} of {len(cases)} damaged statistics gave an error"
    assert not failures, f"{sum(l.startswith('*') for l in failures)} failure class(es) in {spent:.1f} s:\n" + "\n".join(failures)


# ---------------------------------------------------------------------------
# Statistics values (docs/stats-format.md): damaged payloads (checksum fixed,
# so they are parsed) given to lmm_fit_stats, lmm_model_stats, lmm_stats_merge
# ---------------------------------------------------------------------------

STATS_VALUE_CASES = int(os.environ.get("LMM_FUZZ_STATS_VALUE_CASES", "150"))


def seal_statistics(payload):
    return b"LMMSTATS" + struct.pack("<IIQQ", 1, 0, model_checksum(payload), len(payload)) + payload


def test_fuzz_statistics_values():
    t0 = time.monotonic()
    values = aggregate_base_models("lmm_stats_agg")
    for name, v in values.items():
        assert seal_statistics(v[32:]) == v, name  # our checksum is lmm's
    cases = []
    for i in range(STATS_VALUE_CASES):
        r = random.Random(f"{SEED}:stats-values:{i}")
        name = r.choice(sorted(values))
        body = bytearray(values[name][32:])
        desc = [name] + damage(r, body)
        value = seal_statistics(bytes(body))
        p, base = crash.b64(value), crash.b64(values[name])
        cases.append({"label": f"statistics value case {i}: {'; '.join(desc)}", "value_len": len(value), "keep_going": True, "sql": [
            ["SELECT * FROM lmm_fit_stats(?::BLOB)", [p]],
            ["SELECT octet_length(lmm_model_stats(?::BLOB, method := 'ML'))", [p]],
            ["SELECT octet_length(lmm_stats_merge(s)) FROM (VALUES (?::BLOB), (?::BLOB)) v(s)", [p, base]],
        ]})
    outcomes, exits = run_sharded(cases)
    failures = report(cases, outcomes, exits, "test_fuzz_statistics_values")
    spent = time.monotonic() - t0
    errors = sum(1 for o in outcomes if o is not None and o.completed and o.steps and not o.steps[0].ok)
    print(f"{len(cases)} damaged statistics values in {spent:.1f} s; lmm_fit_stats refused {errors}")
    assert errors >= len(cases) // 4, f"only {errors} of {len(cases)} damaged values gave an error"
    assert not failures, f"{sum(l.startswith('*') for l in failures)} failure class(es) in {spent:.1f} s:\n" + "\n".join(failures)
