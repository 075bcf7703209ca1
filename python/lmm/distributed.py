"""Distributed one-factor fits: the groups stay where the rows are, the
optimizer runs here, and every evaluation of the criterion asks the shards.

The engine that holds the shards (Spark's executors, several DuckDB
processes, ...) supplies one function, ``ask(request: bytes) -> bytes``: each
shard's answer (``lmm_shard_answer``) to the request, concatenated in shard
order. Then::

    header, levels = merged_header(con, [lmm_shard_header(s) ...], [lmm_shard_levels(s) ...])
    tidy, blups = drive(con, header, levels, ask, method="REML")

gives the tidy table without its BLUP rows, and the request whose answers
(``lmm_shard_blups`` on each shard) are those rows. The rows must be
partitioned by the grouping factor (``grouping_columns``): a group split over
two shards would count as two groups.
"""
from __future__ import annotations

from typing import Callable

import lmm

__all__ = ["grouping_columns", "merged_header", "drive", "options_text"]


def options_text(**options) -> str:
    """Options in the spelling lmm's internal functions read (key, value pairs)."""
    parts = []
    for k, v in options.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple)):
            v = "\x1f".join(str(x) for x in v)
        parts.append(f"{k}\x1f{v}")
    return "\x1e".join(parts)


def grouping_columns(formula: str, *, con=None, grp=None, re=None) -> list[str]:
    """The columns of the formula's one grouping factor (an error for crossed or nested models)."""
    con = con or lmm.connect()
    text = con.execute("SELECT lmm_dist_grouping(?, ?)", [formula, options_text(grp=grp, re=re)]).fetchall()[0][0]
    return text.split("\x1f")


def merged_header(con, headers, levels) -> tuple[bytes, int]:
    """The shards' headers merged, and their total number of groups."""
    header = lmm.merge_stats(headers, con=con)
    if header is None:
        raise RuntimeError("lmm: no shard has rows")
    return header, int(sum(levels))


def drive(con, header: bytes, levels: int, ask: Callable[[bytes], bytes], *, method="REML", ranef=True, ddf="none"):
    """Run the fit, calling ``ask`` once per request; (tidy pandas DataFrame, BLUP request or None)."""
    opts = options_text(method=method, ranef=ranef, ddf=ddf)
    handle = con.execute("SELECT lmm_dist_start(?, ?, ?)", [header, levels, opts]).fetchall()[0][0]
    done = False
    try:
        while True:
            step = bytes(con.execute("SELECT lmm_dist_next(?)", [handle]).fetchall()[0][0])
            kind = step[:1]
            if kind == b"R":
                con.execute("SELECT lmm_dist_reply(?, ?)", [handle, ask(step[1:])]).fetchall()
            elif kind == b"D":
                break
        blups = con.execute("SELECT lmm_dist_blups(?)", [handle]).fetchall()[0][0]
        tidy = con.execute("SELECT unnest(lmm_dist_result(?), recursive := true)", [handle]).df()
        done = True
        return tidy, (None if blups is None else bytes(blups))
    finally:
        if not done:
            try:
                con.execute("SELECT lmm_dist_abandon(?)", [handle]).fetchall()
            except Exception:
                pass
