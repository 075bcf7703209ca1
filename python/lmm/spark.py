"""Exact mixed-model fits of Spark DataFrames: statistics where the rows are.

``fit(df, formula, **options)``:

1. each partition streams its rows (Arrow batches, ``mapInArrow``) into DuckDB
   with lmm inside the executor's Python worker, which returns one
   statistics value (``lmm_stats_agg``; nothing for an empty partition);
2. the values are merged by a tree reduction (``treeReduce``, each merge
   ``lmm_stats_merge`` in a worker);
3. the driver fits the merged value (``lmm_fit_stats``) and returns the tidy
   table as a Spark DataFrame.

The merge is exact (per-group moments, Chan's formulas), so any partitioning
gives the table that ``lmm_fit`` gives on all rows. The extension reaches the
executors as a Spark file (``SparkContext.addFile``) when this package is not
installed there. An error in a worker (a bad formula, a missing column)
reaches the driver as ``LmmError`` with lmm's own message.
"""
from __future__ import annotations

import os

import lmm

__all__ = ["fit", "stats", "LmmError"]

_FILE = "lmm.duckdb_extension"

# the tidy table's columns, as lmm_fit gives them
_TIDY = [
    ("effect", "string"),
    ("group_var", "string"),
    ("level", "string"),
    ("term", "string"),
    ("estimate", "double"),
    ("std_error", "double"),
    ("statistic", "double"),
    ("df", "double"),
    ("p_value", "double"),
    ("conf_low", "double"),
    ("conf_high", "double"),
]


class LmmError(RuntimeError):
    """lmm's message, raised on the driver for a failure in a worker."""


def _extension() -> str:
    """The extension file in a worker: the Spark file if shipped, else the package's."""
    try:
        from pyspark import SparkFiles

        path = SparkFiles.get(_FILE)
        if os.path.exists(path):
            return path
    except Exception:
        pass
    return lmm.extension_path()


_con = None


def _worker_connection():
    """One DuckDB connection with lmm per worker process (kept between tasks)."""
    global _con
    if _con is None:
        import duckdb

        con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        con.execute(f"LOAD '{lmm._quote(_extension())}'")
        _con = con
    return _con


def _partition_stats(formula: str, options: dict):
    """The mapInArrow function: a partition's batches -> at most one statistics value."""

    def run(batches):
        import pyarrow as pa

        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return
        con = _worker_connection()
        reader = pa.RecordBatchReader.from_batches(first.schema, _chain(first, batches))
        name = f"__lmm_part_{os.getpid()}"
        con.register(name, reader)
        try:
            opts = ""
            if options:
                opts = ", {" + ", ".join(f"'{k}': {lmm._literal(v)}" for k, v in options.items()) + "}"
            value = con.execute(
                f"SELECT lmm_stats_agg(__lmm_row, '{lmm._quote(formula)}'{opts}) FROM query_table('{name}') AS __lmm_row"
            ).fetchall()[0][0]
        finally:
            con.unregister(name)
        if value is not None:
            yield pa.RecordBatch.from_pydict({"stats": [bytes(value)]}, schema=pa.schema([("stats", pa.binary())]))

    return run


def _chain(first, rest):
    yield first
    yield from rest


def _merge_two(a: bytes, b: bytes) -> bytes:
    con = _worker_connection()
    return bytes(con.execute("SELECT lmm_stats_merge(s) FROM (VALUES (?::BLOB), (?::BLOB)) t(s)", [a, b]).fetchall()[0][0])


def _stats_options(grp, re) -> dict:
    options = {}
    if grp is not None:
        options["grp"] = grp
    if re is not None:
        options["re"] = "\x1f".join([re] if isinstance(re, str) else list(re))
    return options


def _lmm_message(e: Exception) -> str | None:
    """lmm's message inside a Spark / Py4J error's text, if there is one."""
    for line in str(e).splitlines():
        at = line.find("lmm: ")
        if at >= 0:
            return line[at:].strip()
    return None


def stats(df, formula: str, *, grp=None, re=None, depth: int = 2, partitions: int | None = None) -> bytes:
    """The merged statistics value of a Spark DataFrame's rows (see the module doc).

    Each task makes one statistics value, whose size follows the groups it
    saw, not its rows; with rows spread over the groups every value is about
    as large as the merged one, so the partitions are first coalesced (no
    shuffle) to `partitions`, by default twice the cluster's parallelism."""
    spark = df.sparkSession
    sc = spark.sparkContext
    target = partitions or 2 * sc.defaultParallelism
    if df.rdd.getNumPartitions() > target:
        df = df.coalesce(target)
    if not getattr(sc, "_lmm_extension_shipped", False):
        sc.addFile(lmm.extension_path())
        sc._lmm_extension_shipped = True
    parts = df.mapInArrow(_partition_stats(formula, _stats_options(grp, re)), "stats binary")
    try:
        return parts.rdd.map(lambda r: bytes(r.stats)).treeReduce(_merge_two, depth=depth)
    except ValueError as e:
        if "empty" in str(e).lower():
            raise LmmError("lmm: the DataFrame has no rows (no partition gave statistics)") from None
        raise
    except Exception as e:
        message = _lmm_message(e)
        if message is None:
            raise
        raise LmmError(message) from None


def fit(df, formula: str, *, method="REML", ranef=True, ddf="none", grp=None, re=None, partitions: int | None = None):
    """The tidy table of `formula` fitted to a Spark DataFrame, as a Spark DataFrame
    (`partitions`: see `stats`)."""
    value = stats(df, formula, grp=grp, re=re, partitions=partitions)
    try:
        tidy = lmm.fit_stats(value, method=method, ranef=ranef, ddf=ddf)
    except Exception as e:
        message = _lmm_message(e) or str(e)
        raise LmmError(message) from None
    # the table (a row per BLUP: as many rows as levels) goes to Spark as Arrow
    spark = df.sparkSession
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key, "false")
    spark.conf.set(key, "true")
    try:
        schema = ", ".join(f"{n} {t}" for n, t in _TIDY)
        return spark.createDataFrame(tidy[[n for n, _ in _TIDY]], schema)
    finally:
        spark.conf.set(key, before)
