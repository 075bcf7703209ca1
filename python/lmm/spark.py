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

import math
import os

import lmm

__all__ = ["fit", "fit_distributed", "stats", "LmmError"]

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


def _stats_of(batches, formula: str, options: dict):
    """The statistics value of a partition's Arrow batches (None for none)."""
    import pyarrow as pa

    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return None
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
    return None if value is None else bytes(value)


_STATS = "stats binary, error string"


def _partition_stats(formula: str, options: dict, limit: tuple[int, str]):
    """The mapInArrow function: a partition's batches -> at most one statistics value.

    lmm's own errors (a bad formula or column, statistics too large) would
    only repeat on a retry, so they travel as data (`error`) and stop the
    job at the driver; any other failure raises, and Spark retries the task."""

    def run(batches):
        import pyarrow as pa

        def checked():
            value = _stats_of(batches, formula, options)
            if value is not None:
                _check_size(len(value), limit, "one partition's statistics")
            return value

        value, error = _as_data(checked)
        if value is None and error is None:
            return  # an empty partition
        schema = pa.schema([("stats", pa.binary()), ("error", pa.string())])
        yield pa.RecordBatch.from_pydict({"stats": [value], "error": [error]}, schema=schema)

    return run


def _chain(first, rest):
    yield first
    yield from rest


def _merge_two(limit: tuple[int, str]):
    """The tree reduction's step on (value, error) pairs: the first error wins."""

    def merge(a, b):
        if a[1] is not None:
            return a
        if b[1] is not None:
            return b

        def checked():
            value = lmm.merge_stats([a[0], b[0]], con=_worker_connection())
            _check_size(len(value), limit, "the merged statistics")
            return value

        return _as_data(checked)

    return merge


def _as_data(f):
    """(f(), None), or (None, lmm's message) when f fails with one; other failures raise."""
    try:
        return f(), None
    except Exception as e:
        message = _lmm_message(e)
        if message is None:
            raise
        return None, message


def _pair(row):
    return (None if row.stats is None else bytes(row.stats), row.error)


# A Spark binary value (an Arrow binary with 32-bit offsets, a Java byte[])
# holds less than 2 GiB.
_BINARY_LIMIT = 2**31 - 2**20


def _size_limit(sc, partitions: int, depth: int) -> tuple[int, str]:
    """What one statistics value may weigh on the merged route, and why.

    With rows spread over the groups every value holds about every group.
    Each crosses from a Python worker into its executor's JVM, which holds
    it several times over while converting it (values of 700 MiB ran
    executors of 1 GiB and of 3.5 GiB heap out of memory at 10^8 rows / 5e6
    groups), so a value may take an eighth of `spark.executor.memory`
    (default 1g); the tree reduction's last values reach the driver together
    as task results, which Spark caps at `spark.driver.maxResultSize`
    (default 1g, 0 = no cap); and a Spark binary value holds less than 2 GiB."""
    conf = sc.getConf()
    limits = [(_BINARY_LIMIT, "a Spark binary value holds less than 2 GiB")]
    executor = conf.get("spark.executor.memory", "1g")
    limits.append((_spark_bytes(executor) // 8, f"spark.executor.memory = {executor}: an executor holds a value several times over"))
    result = conf.get("spark.driver.maxResultSize", "1g")
    cap = _spark_bytes(result)
    if cap > 0:
        last = _tree_results(partitions, depth)
        limits.append((cap // last, f"spark.driver.maxResultSize = {result} for the {last} values that reach the driver"))
    return min(limits)


def _tree_results(partitions: int, depth: int) -> int:
    """How many partial results `treeReduce(depth)` sends to the driver (as Spark's treeAggregate)."""
    scale = max(math.ceil(partitions ** (1.0 / depth)), 2)
    n, last = float(partitions), partitions
    while n > scale + n / scale:
        n /= scale
        last = int(n)
    return max(last, 1)


def _spark_bytes(text: str) -> int:
    """Spark's size notation ('1g', '512m', '2048k', '1024') in bytes."""
    t = text.strip().lower().removesuffix("b")
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def _check_size(size: int, limit: tuple[int, str], what: str):
    if size > limit[0]:
        raise RuntimeError(
            f"lmm: {what} take {size / 2**20:,.1f} MiB, more than the merged route can bring to the driver "
            f"({limit[1]}): its statistics grow with the groups, and every group's reach the driver. "
            "Fit a one-factor model with mode='distributed' (the statistics stay on the executors), "
            "or raise spark.executor.memory, spark.driver.maxResultSize and spark.driver.memory"
        )


def _stats_options(grp, re, weights=None) -> dict:
    options = {} if weights is None else {"weights": weights}
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


def stats(df, formula: str, *, grp=None, re=None, weights=None, depth: int = 2, partitions: int | None = None,
          max_bytes: int | None = None) -> bytes:
    """The merged statistics value of a Spark DataFrame's rows (see the module doc).

    Each task makes one statistics value, whose size follows the groups it
    saw, not its rows; with rows spread over the groups every value is about
    as large as the merged one, so the partitions are first coalesced (no
    shuffle) to `partitions`, by default twice the cluster's parallelism.
    A value larger than `max_bytes` (by default what Spark can carry, see
    `_size_limit`: an eighth of an executor's heap, the driver's
    `spark.driver.maxResultSize` shared by the values that reach it, 2 GiB)
    stops the job with LmmError before it reaches the JVM."""
    spark = df.sparkSession
    sc = spark.sparkContext
    target = partitions or 2 * sc.defaultParallelism
    if df.rdd.getNumPartitions() > target:
        df = df.coalesce(target)
    limit = _size_limit(sc, df.rdd.getNumPartitions(), depth) if max_bytes is None else (int(max_bytes), f"max_bytes = {int(max_bytes):,}")
    _ship(sc)
    parts = df.mapInArrow(_partition_stats(formula, _stats_options(grp, re, weights), limit), _STATS)
    merge = _merge_two(limit)
    try:
        value, error = _spark_call(lambda: parts.rdd.map(_pair).treeReduce(merge, depth=depth))
    except ValueError as e:
        if "empty" in str(e).lower():
            raise LmmError("lmm: the DataFrame has no rows (no partition gave statistics)") from None
        raise
    if error is not None:
        raise LmmError(error)
    return value


def _ship(sc):
    """The extension file to the executors, once per SparkContext."""
    if not getattr(sc, "_lmm_extension_shipped", False):
        sc.addFile(lmm.extension_path())
        sc._lmm_extension_shipped = True


def _as_spark(spark, tidy):
    """A pandas tidy table as a Spark DataFrame (through Arrow)."""
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key, "false")
    spark.conf.set(key, "true")
    try:
        return spark.createDataFrame(tidy[[n for n, _ in _TIDY]], _SCHEMA)
    finally:
        spark.conf.set(key, before)


_SCHEMA = ", ".join(f"{n} {t}" for n, t in _TIDY)


def fit(df, formula: str, *, mode="merged", method="REML", ranef=True, ddf="none", grp=None, re=None, weights=None,
        partitions: int | None = None, max_bytes: int | None = None):
    """The tidy table of `formula` fitted to a Spark DataFrame, as a Spark DataFrame.

    mode="merged" (any model): the partitions' statistics merged and fitted
    on the driver (`partitions`: see `stats`). mode="distributed" (one
    grouping factor): the rows are repartitioned by group into `partitions`
    (see `fit_distributed`), the statistics stay cached on the executors,
    and each evaluation of the optimizer is one Spark job. `max_bytes`
    bounds one statistics value (merged: see `stats`; distributed: a
    shard); `weights` names a column of prior weights."""
    if mode == "distributed":
        return fit_distributed(df, formula, method=method, ranef=ranef, ddf=ddf, grp=grp, re=re, weights=weights, partitions=partitions,
                               max_bytes=max_bytes)
    if mode != "merged":
        raise ValueError(f"lmm: mode must be 'merged' or 'distributed', not {mode!r}")
    value = stats(df, formula, grp=grp, re=re, weights=weights, partitions=partitions, max_bytes=max_bytes)
    try:
        tidy = lmm.fit_stats(value, method=method, ranef=ranef, ddf=ddf)
    except Exception as e:
        message = _lmm_message(e) or str(e)
        raise LmmError(message) from None
    # the table (a row per BLUP: as many rows as levels) goes to Spark as Arrow
    return _as_spark(df.sparkSession, tidy)


# ---------------------------------------------------------------- distributed

_SHARD = "part int, header binary, levels long, stats binary, error string"


def _shard_limit(sc) -> tuple[int, str]:
    """What one shard's statistics may weigh: the part of `_size_limit` that is
    about an executor (shards stay on the executors; none reaches the driver)."""
    executor = sc.getConf().get("spark.executor.memory", "1g")
    return min((_BINARY_LIMIT, "a Spark binary value holds less than 2 GiB"),
               (_spark_bytes(executor) // 8, f"spark.executor.memory = {executor}: an executor holds a shard several times over"))


def _partition_shard(formula: str, options: dict, limit: tuple[int, str]):
    """The mapInArrow function: a partition's rows -> its shard (statistics,
    header, number of groups). As on the merged route, lmm's own errors (a
    bad formula or column, a shard too large) would only repeat on a retry:
    they travel as data (`error`) and stop the fit at the driver."""

    def shard(batches):
        value = _stats_of(batches, formula, options)
        if value is None:
            return None
        if len(value) > limit[0]:
            raise LmmError(
                f"lmm: one shard's statistics take {len(value):,} bytes, more than {limit[0]:,} ({limit[1]}); "
                "use more partitions (partitions=), or raise spark.executor.memory")
        con = _worker_connection()
        with lmm._Blobs(con, [value]) as t:
            header, levels = con.execute(f"SELECT lmm_shard_header(v), lmm_shard_levels(v) FROM {t}").fetchall()[0]
        return bytes(header), int(levels), value

    def run(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        made, error = _as_data(lambda: shard(batches))
        if made is None and error is None:
            return  # an empty partition
        header, levels, value = made or (None, 0, None)
        yield pa.RecordBatch.from_pydict(
            {"part": [TaskContext.get().partitionId()], "header": [header], "levels": [levels], "stats": [value], "error": [error]},
            schema=pa.schema([("part", pa.int32()), ("header", pa.binary()), ("levels", pa.int64()), ("stats", pa.binary()),
                              ("error", pa.string())]),
        )

    return run


# A test's hook: a task property naming a file; the first request task to
# find it missing creates it and fails (Spark retries the task).
_FAIL_ONCE = "lmm.test.fail_once"


def _fail_once():
    from pyspark import TaskContext

    ctx = TaskContext.get()
    path = ctx.getLocalProperty(_FAIL_ONCE) if ctx else None
    if path and not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("injected failure of a request task")


def _over_shards(batches, sql: str, params: list):
    """`sql` over each Arrow batch of shards (columns part, stats, ...; read
    as the view __lmm_shards, never as parameters: see lmm._Blobs)."""
    import pyarrow as pa

    con = _worker_connection()
    name = f"__lmm_shards_{os.getpid()}"
    for b in batches:
        if b.num_rows == 0:
            continue
        con.register(name, pa.Table.from_batches([b]))
        try:
            yield con.execute(sql.format(shards=name), params).to_arrow_table()
        finally:
            con.unregister(name)


def _answers(header: bytes, levels: int, request: bytes):
    """The mapInArrow function of one request: each shard's answer."""

    def run(batches):
        _fail_once()
        sql = "SELECT part, lmm_shard_answer(?, ?, stats, ?) AS answer FROM {shards}"
        for table in _over_shards(batches, sql, [header, levels, request]):
            # a shard's BLUP rows in batches of at most _BLUP_BATCH rows: one
            # batch of a shard's 625,000 rows (10^8 rows / 5e6 groups in 16
            # shards) exhausted a 4 GiB executor
            yield from table.to_batches(max_chunksize=_BLUP_BATCH)

    return run


_BLUP_BATCH = 65_536


def _blup_rows(header: bytes, levels: int, request: bytes):
    """The mapInArrow function of the BLUPs: each shard's ran_vals rows."""

    def run(batches):
        columns = ", ".join(n for n, _ in _TIDY)
        sql = f"SELECT {columns} FROM (SELECT unnest(lmm_shard_blups(?, ?, stats, ?), recursive := true) FROM {{shards}})"
        for table in _over_shards(batches, sql, [header, levels, request]):
            # a shard's BLUP rows in batches of at most _BLUP_BATCH rows: one
            # batch of a shard's 625,000 rows (10^8 rows / 5e6 groups in 16
            # shards) exhausted a 4 GiB executor
            yield from table.to_batches(max_chunksize=_BLUP_BATCH)

    return run


def _spark_call(f):
    """Run `f`; a failure carrying lmm's message becomes LmmError."""
    try:
        return f()
    except LmmError:
        raise
    except Exception as e:
        message = _lmm_message(e)
        if message is None:
            raise
        raise LmmError(message) from None


def _one_shard_per_batch(spark, job):
    """Run a job over the cached shards with one shard per Arrow batch (a
    task's shards, hundreds of MB each, in one batch exhausted a 4 GiB
    executor at 10^8 rows / 5e6 groups); the session's setting is restored."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, "1")
    try:
        return _spark_call(job)
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def fit_distributed(df, formula: str, *, method="REML", ranef=True, ddf="none", grp=None, re=None, weights=None,
                    partitions: int | None = None, max_bytes: int | None = None):
    """A one-factor model fitted with its groups left on the executors.

    1. the rows are repartitioned by the grouping columns (`partitions`
       partitions, by default the larger of twice the parallelism and the
       input's number of partitions); each partition's statistics (a shard:
       its groups, whole) are computed once and cached; a shard larger than
       `max_bytes` (by default an eighth of spark.executor.memory) stops the
       fit with LmmError asking for more partitions;
    2. the driver merges the shards' headers (no groups: a few kB) and runs
       the optimizer; each evaluation of the criterion (and of its gradient)
       is one Spark job whose tasks answer with a few numbers per shard
       (`lmm.distributed`);
    3. the BLUP rows are computed on the executors from the cached shards.

    The result: the tidy table as a Spark DataFrame (the fixed effects,
    variance parameters and fit rows, then each shard's BLUP rows; its
    BLUP rows are kept on the executors' disks). Crossed and nested models,
    and ddf="Kenward-Roger", take the merged route (`fit`)."""
    import duckdb
    from pyspark import StorageLevel

    from lmm import distributed

    spark = df.sparkSession
    sc = spark.sparkContext
    _ship(sc)
    con = lmm.connect()
    try:
        columns = distributed.grouping_columns(formula, con=con, grp=grp, re=re)
    except duckdb.Error as e:
        raise LmmError(_lmm_message(e) or str(e)) from None
    if str(ddf).lower().replace("_", "-") in ("kenward-roger", "kr"):
        raise LmmError("lmm: ddf='Kenward-Roger' needs every group at once; use mode='merged'")
    for c in columns:
        if c not in df.columns:
            raise LmmError(f"lmm: the grouping column '{c}' is not a column of the DataFrame (its columns: {', '.join(df.columns)})")
    # A shard's statistics follow its groups, at most its rows: at least as many
    # shards as input partitions keeps each within what one input partition
    # brings (4 shards of 10^8 rows / 5e6 groups, 180 MiB each, ran 1 GiB
    # executors out of heap when their cached blocks were read back).
    n = partitions or max(2 * sc.defaultParallelism, df.rdd.getNumPartitions())
    limit = _shard_limit(sc) if max_bytes is None else (int(max_bytes), f"max_bytes = {int(max_bytes):,}")
    shards = df.repartition(n, *[df[c] for c in columns]).mapInArrow(
        _partition_shard(formula, _stats_options(grp, re, weights), limit), _SHARD)
    shards = shards.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        meta = _spark_call(lambda: shards.select("part", "header", "levels", "error").collect())
        if not meta:
            raise LmmError("lmm: the DataFrame has no rows (no partition gave statistics)")
        errors = [r.error for r in meta if r.error is not None]
        if errors:
            raise LmmError(errors[0])
        header, levels = distributed.merged_header(con, [bytes(r.header) for r in meta], [r.levels for r in meta])
        expected = sorted(r.part for r in meta)
        # one task per core answers for several shards (a job of many tiny
        # tasks costs more in scheduling than the answers); coalescing keeps
        # each shard's cached block where it is when it can
        answering = shards.coalesce(max(1, min(len(meta), sc.defaultParallelism)))

        def ask(request: bytes) -> bytes:
            rows = _one_shard_per_batch(spark, lambda: answering.mapInArrow(_answers(header, levels, request), "part int, answer binary").collect())
            rows.sort(key=lambda r: r.part)
            if [r.part for r in rows] != expected:
                raise LmmError("lmm: a request was answered by other shards than those of the fit (a partition lost or duplicated)")
            return b"".join(bytes(r.answer) for r in rows)

        try:
            tidy, blups = distributed.drive(con, header, levels, ask, method=method, ranef=ranef, ddf=ddf)
        except duckdb.Error as e:
            raise LmmError(_lmm_message(e) or str(e)) from None
        # lmm_fit's order: fixed and ran_pars rows, the BLUPs, the fit rows
        result = _as_spark(spark, tidy[tidy["effect"] != "fit"])
        if blups is not None:
            # DISK_ONLY: written as they come, never unrolled on the heap
            # (MEMORY_AND_DISK beside the cached shards ran a 4 GiB executor
            # out of heap at 10^8 rows / 5e6 groups)
            rows = shards.mapInArrow(_blup_rows(header, levels, blups), _SCHEMA).persist(StorageLevel.DISK_ONLY)
            _one_shard_per_batch(spark, rows.count)
            result = result.unionByName(rows)
        return result.unionByName(_as_spark(spark, tidy[tidy["effect"] == "fit"]))
    finally:
        shards.unpersist()
