"""Crash-test harness: run SQL (or a Python snippet) against the loaded
extension in a child Python process, and judge how that child ended.

A crash in lmm would take pytest down with it; run in a child, it becomes a
test failure with the signal, the stderr tail and the case that caused it.

    res = run_sql(["SELECT ..."], timeout=10)
    assert_clean(res, contains="lmm:")          # exited normally, lmm's error

    outcomes = run_batch(cases, setup=[...])   # many cases, one child

A *case* is a dict with either ``"sql"``: a list of statements, each a string
or ``[sql, params]`` (a param ``{"b64": "..."}`` is passed as a BLOB), or
``"code"``: Python source run with ``con`` (the connection) and ``duckdb`` in
scope. The child runs the statements in order and stops at the first error
(unless the case has ``"keep_going": True``).

The child caps its address space (RLIMIT_AS, 16 GiB by default, see DEFAULT_MEM), so a runaway
allocation fails fast (Rust then aborts: SIGABRT, "memory allocation of N
bytes failed"; DuckDB raises its out-of-memory error) instead of eating the
machine. `run_batch` runs many cases in one child, each under its own time
limit; when the child dies or hangs, the case it was running is rerun alone in
a fresh child to confirm, and the rest of the batch continues in a new child.

Run as a script (``python crash.py``) it is the child: it reads one JSON line
(the spec) from stdin and writes protocol lines prefixed with ``MARK``.
"""
import base64
import json
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXT = pathlib.Path(os.environ.get("LMM_EXTENSION", ROOT / "build" / "release" / "lmm.duckdb_extension")).resolve()
PYTHON = sys.executable
MARK = "\x1eLMM-CHILD "
# 16 GiB: faer's matrix multiply (private-gemm-x86) reserves 2 x L3 of address
# space per thread that runs it, untouched; 960 MiB where the L3 reads 480 MiB
# (this VM), a few GiB over DuckDB's and rayon's threads. Real runaways (the
# 25 GiB of the reliability issue's forged model) still hit the cap.
DEFAULT_MEM = 16 << 30

# ---------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------


@dataclass
class Step:
    """One statement (or snippet) of a case, as the child ran it."""
    ok: bool
    error: str = None        # str(exception), None if ok
    error_type: str = None   # the exception's class name (InvalidInputException, ...)
    nrows: int = None
    value: object = None     # what a snippet stored in `result` (JSON-able), if anything


@dataclass
class Outcome:
    """A case's fate. `completed` False means the child died or hung during it."""
    completed: bool
    steps: list = field(default_factory=list)
    seconds: float = 0.0
    maxrss_kib: int = 0          # the child's peak RSS after the case
    rss_growth_kib: int = 0      # how much the peak grew during the case
    vm_kib: int = 0              # the child's address space after the case
    vm_growth_kib: int = 0       # how much its peak address space grew during the case
    # set when not completed:
    returncode: int = None
    signal: str = None
    timed_out: bool = False
    stderr: str = ""
    alone: "Outcome" = None      # the rerun of this case alone in a fresh child

    @property
    def error(self):
        for s in self.steps:
            if not s.ok:
                return s.error
        return None

    @property
    def error_type(self):
        for s in self.steps:
            if not s.ok:
                return s.error_type
        return None

    def describe(self):
        if self.completed:
            return f"completed in {self.seconds:.2f}s; error: {self.error!r}"
        how = "hung (killed after the time limit)" if self.timed_out else (
            f"died by {self.signal}" if self.signal else f"exited with code {self.returncode}")
        tail = self.stderr.strip()[-600:]
        text = f"child {how} after {self.seconds:.2f}s"
        if tail:
            text += f"; stderr tail: {tail!r}"
        if self.alone is not None:
            text += "; alone in a fresh child: " + (
                "reproduced" if not self.alone.completed else "did NOT reproduce (" + self.alone.describe() + ")")
        return text


@dataclass
class Result:
    """How a child run ended (`run_sql`, `run_snippet`)."""
    returncode: int
    signal: str
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    outcomes: list            # one Outcome per case that completed (in order)
    ready: bool               # the child loaded the extension and ran its setup

    @property
    def error(self):
        """The first error of the (single) case, or None."""
        for o in self.outcomes:
            if o.error is not None:
                return o.error
        return None

    @property
    def value(self):
        for o in self.outcomes:
            for s in o.steps:
                if s.value is not None:
                    return s.value
        return None

    def describe(self):
        how = "hung (killed)" if self.timed_out else (
            f"died by {self.signal}" if self.signal else f"exit code {self.returncode}")
        return (f"child {how} after {self.seconds:.2f}s; error: {self.error!r}; "
                f"stderr tail: {self.stderr.strip()[-800:]!r}")


def strip_duckdb_prefix(message):
    """'Invalid Input Error: lmm: ...' -> 'lmm: ...' (DuckDB's class prefix removed)."""
    if message is None:
        return None
    head, sep, rest = message.partition(": ")
    if sep and head.endswith("Error") and len(head) < 40:
        return rest
    return message


def is_lmm_error(message):
    text = strip_duckdb_prefix(message)
    return text is not None and text.startswith("lmm:")


def is_internal_error(message):
    """A caught panic ('lmm: internal error: ...') or DuckDB's own INTERNAL error."""
    if message is None:
        return False
    return "lmm: internal error" in message or message.startswith("INTERNAL Error") \
        or "database has been invalidated" in message


def is_memory_error(message):
    return message is not None and any(s in message for s in (
        "Out of Memory", "out of memory", "memory allocation of", "MemoryError", "std::bad_alloc",
        "Cannot allocate memory"))


def crash_signature(stderr):
    """The telling line of a dead child's stderr (digits kept), or ''."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    for needle in ("Rust cannot catch foreign exceptions", "fatal runtime error", "memory allocation of",
                   "panicked at", "terminate called", "Segmentation fault", "INTERNAL Error", "Error"):
        for l in lines:
            if needle in l:
                return l[:200]
    return lines[-1][:200] if lines else ""


def assert_clean(res, contains=None, error=None, time_limit=None):
    """Assert the child exited normally (no signal, no abort, no hang, no
    'fatal runtime error'), within `time_limit` seconds if given.

    error: True: an error is required; False: none is allowed; None: either.
    contains: if an error occurred, it must contain this text (a string or a
    tuple of alternatives); without it, the error must be lmm's ('lmm: ...',
    not an internal error).
    """
    assert not res.timed_out, "child hung: " + res.describe()
    assert res.signal is None, "child crashed: " + res.describe()
    assert res.returncode == 0, "child did not exit normally: " + res.describe()
    assert "fatal runtime error" not in res.stderr, res.describe()
    assert "Rust cannot catch foreign exceptions" not in res.stderr, res.describe()
    assert res.ready, "child failed before running the case: " + res.describe()
    assert res.outcomes and all(o.completed for o in res.outcomes), res.describe()
    if time_limit is not None:
        spent = sum(o.seconds for o in res.outcomes)
        assert spent <= time_limit, f"took {spent:.2f}s, limit {time_limit}s: " + res.describe()
    err = res.error
    if error is True:
        assert err is not None, "expected an error, the statements succeeded"
    if error is False:
        assert err is None, "unexpected error: " + res.describe()
    if err is not None:
        assert not is_internal_error(err), "internal error (a bug): " + err
        if contains is None:
            assert is_lmm_error(err), "error is not lmm's: " + err
        else:
            alts = (contains,) if isinstance(contains, str) else tuple(contains)
            assert any(a in err for a in alts), f"error {err!r} contains none of {alts!r}"
    return res


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------


def _signal_name(returncode):
    if returncode is not None and returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return None


def _outcome(msg):
    steps = [Step(**s) for s in msg["steps"]]
    return Outcome(completed=True, steps=steps, seconds=msg["t"], maxrss_kib=msg["rss"],
                   rss_growth_kib=msg["drss"], vm_kib=msg.get("vm", 0),
                   vm_growth_kib=msg.get("dvm", 0))


def _spawn(spec, case_timeout, setup_timeout):
    """Run one child on `spec`; give (result fields, outcomes by index, running index, its start)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([PYTHON, str(pathlib.Path(__file__).resolve())],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        other = []
        outcomes = {}
        ready = False
        running, started = None, t0
        deadline = t0 + setup_timeout
        timed_out = False
        eof = False
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                eof = True
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if eof and buf:
                lines.append(buf)
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if not line.startswith(MARK):
                    other.append(line)
                    continue
                msg = json.loads(line[len(MARK):])
                now = time.monotonic()
                if msg["kind"] == "ready":
                    ready = True
                elif msg["kind"] == "start":
                    running, started = msg["i"], now
                    deadline = now + case_timeout
                elif msg["kind"] == "done":
                    outcomes[msg["i"]] = _outcome(msg)
                    running = None
                    deadline = now + setup_timeout
        if timed_out:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own session
            except ProcessLookupError:
                pass
        sel.close()
        proc.stdout.close()
        rc = proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return dict(returncode=rc, signal=None if timed_out else _signal_name(rc), timed_out=timed_out,
                seconds=time.monotonic() - t0, stdout="\n".join(other), stderr=stderr,
                ready=ready), outcomes, running, started


def _spec(cases, setup, mem_bytes, config, ext):
    return {"ext": str(ext), "setup": list(setup), "cases": cases, "mem_bytes": mem_bytes,
            "config": config or {}}


def run_cases(cases, setup=(), timeout=10, mem_bytes=DEFAULT_MEM, config=None, ext=EXT, setup_timeout=60):
    """Run `cases` in one child; give a Result (outcomes of the cases that completed)."""
    fields, outcomes, _, _ = _spawn(_spec(cases, setup, mem_bytes, config, ext), timeout, setup_timeout)
    return Result(outcomes=[outcomes[i] for i in sorted(outcomes)], **fields)


def run_sql(statements, setup=(), timeout=10, **kw):
    """Run SQL statements (strings or [sql, params]) in a child, stopping at the first error."""
    if isinstance(statements, str):
        statements = [statements]
    return run_cases([{"sql": list(statements)}], setup=setup, timeout=timeout, **kw)


def run_snippet(code, setup=(), timeout=10, **kw):
    """Run Python `code` in a child with `con` (lmm loaded) and `duckdb` in scope;
    whatever it assigns to `result` (JSON-able) comes back as Result.value."""
    return run_cases([{"code": code}], setup=setup, timeout=timeout, **kw)


class Batch(list):
    """The Outcomes of `run_batch`, one per case (None: not reached before the
    deadline); `exits` lists children that ran all their cases but then did
    not exit normally (a crash at teardown)."""
    exits = ()


def run_batch(cases, setup=(), case_timeout=10, mem_bytes=DEFAULT_MEM, config=None, ext=EXT,
              deadline=None, confirm=True, confirm_hangs=False):
    """Run many cases in as few children as possible; give a Batch.

    When a child dies or hangs during case k, case k gets an Outcome with
    completed=False (and, if `confirm`, `alone`: its rerun alone in a fresh
    child; for a hang only with `confirm_hangs`, as that costs another
    time limit); the cases after it continue in a new child. Cases not
    reached before `deadline` (a time.monotonic() value) stay None.
    """
    outcomes = Batch([None] * len(cases))
    outcomes.exits = []
    pending = list(range(len(cases)))
    while pending:
        if deadline is not None and time.monotonic() > deadline:
            break
        spec = _spec([cases[i] for i in pending], setup, mem_bytes, config, ext)
        fields, done, running, started = _spawn(spec, case_timeout, setup_timeout=60)
        if not fields["ready"]:
            raise RuntimeError("the child could not load the extension or run the setup: "
                               f"rc={fields['returncode']} stderr={fields['stderr'][-2000:]}")
        for li, o in done.items():
            outcomes[pending[li]] = o
        if len(done) == len(pending):
            if fields["returncode"] != 0 or "fatal runtime error" in fields["stderr"]:
                outcomes.exits.append(fields)
            break
        # The child ended during a case: the first one without an outcome.
        k = running if running is not None else min(i for i in range(len(pending)) if i not in done)
        culprit = pending[k]
        bad = Outcome(completed=False, seconds=time.monotonic() - started if running is not None else 0.0,
                      returncode=fields["returncode"], signal=fields["signal"],
                      timed_out=fields["timed_out"], stderr=fields["stderr"])
        if confirm and (confirm_hangs or not bad.timed_out) and (deadline is None or time.monotonic() < deadline):
            f2, done2, _, _ = _spawn(_spec([cases[culprit]], setup, mem_bytes, config, ext),
                                     case_timeout, setup_timeout=60)
            bad.alone = done2[0] if 0 in done2 else Outcome(
                completed=False, returncode=f2["returncode"], signal=f2["signal"],
                timed_out=f2["timed_out"], stderr=f2["stderr"], seconds=f2["seconds"])
        outcomes[culprit] = bad
        pending = [i for i in pending if outcomes[i] is None]
    return outcomes


def b64(data):
    """A BLOB parameter for a statement."""
    return {"b64": base64.b64encode(bytes(data)).decode()}


# ---------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------


def _child_main():
    spec = json.loads(sys.stdin.readline())
    import resource
    if spec.get("mem_bytes"):
        n = int(spec["mem_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
    import duckdb

    out = sys.stdout

    def emit(kind, **kw):
        out.write(MARK + json.dumps({"kind": kind, **kw}) + "\n")
        out.flush()

    def param(p):
        if isinstance(p, dict) and "b64" in p:
            return base64.b64decode(p["b64"])
        return p

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def vm_kib(field="VmSize"):
        """The address space now (VmSize) or at its peak (VmPeak), KiB; 0 if unknown."""
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    config = {"allow_unsigned_extensions": "true"}
    config.update(spec.get("config") or {})
    con = duckdb.connect(config=config)
    con.execute(f"LOAD '{spec['ext']}'")
    for s in spec.get("setup") or []:
        con.execute(s)
    emit("ready")
    for i, case in enumerate(spec["cases"]):
        emit("start", i=i)
        before, vm_before = peak(), vm_kib("VmPeak")
        t0 = time.monotonic()
        steps = []
        if "code" in case:
            scope = {"con": con, "duckdb": duckdb, "result": None}
            try:
                exec(case["code"], scope)
                value = scope.get("result")
                try:
                    json.dumps(value)
                except (TypeError, ValueError):
                    value = repr(value)
                steps.append({"ok": True, "value": value})
            except BaseException as e:  # noqa: BLE001 - report everything, MemoryError included
                steps.append({"ok": False, "error": str(e) or type(e).__name__, "error_type": type(e).__name__})
        else:
            for st in case["sql"]:
                sql, params = (st, None) if isinstance(st, str) else (st[0], [param(p) for p in st[1]])
                try:
                    n = len(con.execute(sql, params).fetchall()) if params else len(con.execute(sql).fetchall())
                    steps.append({"ok": True, "nrows": n})
                except BaseException as e:  # noqa: BLE001
                    steps.append({"ok": False, "error": str(e) or type(e).__name__, "error_type": type(e).__name__})
                    if not case.get("keep_going"):
                        break
        after = peak()
        emit("done", i=i, steps=steps, t=time.monotonic() - t0, rss=after, drss=after - before, vm=vm_kib(),
             dvm=vm_kib("VmPeak") - vm_before)
    con.close()


if __name__ == "__main__":
    _child_main()
