"""What a job leaves behind: artifact files copied into the run record, JUnit report counts and
test cases.

Globs are matched by walking the job's folder without following symbolic links to folders (a
link loop, or a link to ``/``, is never walked), and never below a ``.flowray`` folder (the run
records). A link to a file is collected only when it points inside the folder. Only files that
this job attempt created or changed count (their inode change time is at or after the attempt's
start): files left by earlier runs, earlier attempts or jobs that ran before are not collected.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

RECORDS_FOLDER = ".flowray"  # never matched nor walked into
_MAGIC = re.compile(r"[*?[]")

# What the record keeps of a job's test cases. Every job's cases land in the run's record.json
# (and its job.finished event), which is read and written whole, so one job must add a bounded
# amount, whatever its suite holds: a sweep of 1,000 matrix cells that each run 5,000 tests
# would otherwise make a record of millions of cases. With these caps a job whose cases pass
# adds some 30 KB; one whose 200 kept cases all fail with long tracebacks about 1.2 MB. The cap
# on cases keeps the failed ones first (what a person opens the page for); the caps on strings
# keep one traceback (often the test's whole output) from taking the room of the others.
MAX_CASES = 200  # test cases kept per job
MAX_MESSAGE = 1_000  # characters of a case's message
MAX_TEXT = 4_000  # characters of a case's text (a traceback)
MAX_NAME = 1_000  # characters of a case's suite, classname and name (generated test ids)

CaseStatus = Literal["passed", "failure", "error", "skipped"]


def _same(text: str) -> str:
    return text


def _cut(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and a marker that says
    how many characters were cut, ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    while True:  # the marker's length depends on the number it shows
        marker = f" [... {dropped:,} more characters cut]"
        keep = max(0, limit - len(marker))
        if len(text) - keep == dropped:
            return text[:keep] + marker
        dropped = len(text) - keep


@dataclass
class ReportCase:
    """One ``<testcase>`` of a JUnit report, as read (nothing masked nor cut yet)."""

    suite: str
    classname: str
    name: str
    status: CaseStatus
    time: float | None = None  # seconds
    message: str | None = None  # the failure/error/skipped element's message, or its first line
    text: str | None = None  # the failure/error/skipped element's text (a traceback)

    def to_record(self, mask: Callable[[str], str] = _same) -> dict[str, Any]:
        """The case as the record keeps it: every string masked, then cut to its cap (masked
        first, so that a cut never leaves the start of a secret)."""
        return {
            "suite": _cut(mask(self.suite), MAX_NAME),
            "classname": _cut(mask(self.classname), MAX_NAME),
            "name": _cut(mask(self.name), MAX_NAME),
            "status": self.status,
            "time": self.time,
            "message": None if self.message is None else _cut(mask(self.message), MAX_MESSAGE),
            "text": None if self.text is None else _cut(mask(self.text), MAX_TEXT),
        }


@dataclass
class ReportCounts:
    """What a job's JUnit reports hold: counts of all their cases (as ``<testsuite>`` gives
    them when it lists none), and the cases the record may keep."""

    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    files: int = 0
    paths: list[str] = field(default_factory=list)  # the files read (not in the record)
    # The cases read, by kind, in file order; each list holds at most MAX_CASES (no more can
    # be kept), so a report of 100,000 cases keeps no more of them than one of 600.
    failed_cases: list[ReportCase] = field(default_factory=list)  # failures and errors
    skipped_cases: list[ReportCase] = field(default_factory=list)
    passed_cases: list[ReportCase] = field(default_factory=list)
    cases_read: int = 0  # <testcase> elements read, kept or not

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ReportCounts:
        """The counts of a record's (or a job.finished event's) ``reports``."""
        def count(key: str) -> int:
            return int(record.get(key, 0))

        return cls(tests=count("tests"), failures=count("failures"), errors=count("errors"),
                   skipped=count("skipped"), files=count("files"))

    @property
    def passed(self) -> int:
        return max(0, self.tests - self.failures - self.errors - self.skipped)

    def add_case(self, case: ReportCase) -> None:
        """Count ``case`` as read, and hold it while its kind has room."""
        self.cases_read += 1
        kind = {"failure": self.failed_cases, "error": self.failed_cases,
                "skipped": self.skipped_cases}.get(case.status, self.passed_cases)
        if len(kind) < MAX_CASES:
            kind.append(case)

    def cases(self) -> list[ReportCase]:
        """The cases the record keeps: failures and errors, then skipped, then passed (each in
        file order), at most :data:`MAX_CASES`."""
        return (self.failed_cases + self.skipped_cases + self.passed_cases)[:MAX_CASES]

    def to_record(self, mask: Callable[[str], str] = _same) -> dict[str, Any]:
        """The record's ``reports``: counts of every case, the kept cases with each string
        passed through ``mask`` (the job's secret masker), and how many cases were left out."""
        kept = self.cases()
        return {
            "tests": self.tests, "failures": self.failures, "errors": self.errors,
            "skipped": self.skipped, "files": self.files, "passed": self.passed,
            "cases": [c.to_record(mask) for c in kept],
            "cases_omitted": self.cases_read - len(kept),
        }

    def summary(self) -> str:
        parts = [f"{self.passed} passed", f"{self.failures + self.errors} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return ", ".join(parts)


def attempt_stamp(*folders: str) -> int:
    """The time a job attempt starts, on the clock the file system stamps files with (a file
    created and removed in the first of ``folders`` that takes one: pass one on the file
    system of the files to collect, as a shared workspace's server may keep another time), in
    nanoseconds; the system clock if none can be written."""
    for folder in folders:
        path = os.path.join(folder, f".attempt-stamp-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            continue
        try:
            return os.fstat(fd).st_ctime_ns
        finally:
            os.close(fd)
            os.unlink(path)
    import time

    return time.time_ns()


def _segment_regex(segment: str) -> str:
    out = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2 if segment[i + 1:i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = segment[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    regex = "".join(out)
    if not segment.startswith("."):
        regex = "(?!\\.)" + regex  # as glob: * and ? do not match a leading dot
    return regex


_NAME = "(?!\\.)[^/]+"  # one path part that is not hidden


def _pattern_regex(segments: list[str]) -> re.Pattern[str]:
    """A glob as a regular expression over ``/``-separated relative paths (``**``: any number
    of folders, hidden ones left out, as ``glob.glob(recursive=True)``)."""
    regex = ""
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            regex += f"(?:{_NAME}(?:/{_NAME})*)?" if last else f"(?:{_NAME}/)*"
        else:
            regex += _segment_regex(seg) + ("" if last else "/")
    return re.compile(regex + "\\Z")


class _Walker:
    """Matches globs below ``root`` without leaving it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def inside(self, real: str) -> bool:
        return (real == self.root or real.startswith(self.root + os.sep)) and \
            RECORDS_FOLDER not in os.path.relpath(real, self.root).split(os.sep)

    def entries(self, rel_dir: str) -> Iterator[tuple[str, bool]]:
        """(path relative to root, is a real folder) of everything below ``rel_dir``, links
        to folders not followed, ``.flowray`` left out."""
        top = os.path.join(self.root, rel_dir) if rel_dir else self.root
        for here, dirs, files in os.walk(top, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d != RECORDS_FOLDER)
            base = os.path.relpath(here, self.root)
            base = "" if base == "." else base
            for d in dirs:
                yield os.path.join(base, d), True
            for f in sorted(files):
                yield os.path.join(base, f), False

    def match(self, pattern: str) -> tuple[list[str], str | None]:
        """Paths (relative to root) that ``pattern`` matches; a problem when it leaves root."""
        norm = os.path.normpath(pattern)
        if os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep):
            return [], "is outside the workspace"
        segments = [] if norm == "." else norm.split(os.sep)
        literal: list[str] = []
        for seg in segments:
            if _MAGIC.search(seg):
                break
            literal.append(seg)
        prefix = os.path.join(*literal) if literal else ""
        if RECORDS_FOLDER in literal:
            return [], None
        if len(literal) == len(segments):  # no wildcard: the path itself
            full = os.path.join(self.root, prefix) if prefix else self.root
            return ([prefix or "."] if os.path.lexists(full) else []), None
        start = os.path.join(self.root, prefix) if prefix else self.root
        if os.path.islink(start) or not os.path.isdir(start) or \
                not self.inside(os.path.realpath(start)):
            return [], None
        regex = _pattern_regex(segments)
        return [rel for rel, _ in self.entries(prefix) if regex.match(rel)], None

    def files(self, rel: str) -> Iterator[tuple[str, str | None]]:
        """The files a match stands for: (path relative to root, None) to take, or (path,
        why not) to leave. A folder stands for the files below it."""
        full = os.path.join(self.root, rel) if rel != "." else self.root
        if rel != "." and not self.inside(os.path.realpath(os.path.dirname(full))):
            # a folder on the way is a link out (`rl/etc/passwd` with `rl -> /`)
            yield rel, "is outside the workspace (a folder on its path is a link)"
            return
        if os.path.islink(full):
            real = os.path.realpath(full)
            if not self.inside(real):
                yield rel, "is a link to outside the workspace"
            elif os.path.isdir(real):
                yield rel, "is a link to a folder (links are not followed)"
            elif os.path.isfile(real):
                yield rel, None
            return
        if os.path.isdir(full):
            for sub, is_dir in self.entries("" if rel == "." else rel):
                if not is_dir:
                    yield from self.files(sub)
            return
        yield rel, None


def _fresh(path: str, since: int | None) -> bool:
    if since is None:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_ctime_ns >= since


def collect_artifacts(base: str, patterns: list[str], dest: str, *,
                      since: int | None = None) -> tuple[list[str], list[str]]:
    """Copy the files matching ``patterns`` (relative to ``base``) below ``dest``, each at
    its path relative to ``base``; with ``since``, only those changed at or after it
    (:func:`attempt_stamp`). Returns (paths copied, relative to ``base``; problems)."""
    walker = _Walker(base)
    copied: list[str] = []
    problems: list[str] = []
    for pattern in patterns:
        matches, problem = walker.match(pattern)
        if problem:
            problems.append(f"artifacts: '{pattern}' {problem}; not collected")
            continue
        taken = 0
        for match in matches:
            for rel, why in walker.files(match):
                if why is not None:
                    problems.append(f"artifacts: '{rel}' {why}; not collected")
                    continue
                full = os.path.join(walker.root, rel)
                if rel in copied or not _fresh(full, since):
                    continue
                target = os.path.join(dest, rel)
                try:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(full, target)
                except OSError as exc:
                    problems.append(f"artifacts: cannot copy '{rel}': {exc.strerror or exc}")
                    continue
                copied.append(rel)
                taken += 1
        if not taken and not matches:
            problems.append(f"artifacts: nothing matches '{pattern}'")
        elif not taken and since is not None and not any(
                p.startswith(f"artifacts: '{pattern}'") for p in problems):
            problems.append(f"artifacts: nothing this job wrote matches '{pattern}' "
                            "(older files are not collected)")
    return copied, problems


def read_reports(base: str, patterns: list[str], *,
                 since: int | None = None) -> tuple[ReportCounts, list[str]]:
    """Sum the test counts of the JUnit XML files matching ``patterns`` (with ``since``, only
    those written at or after it), and gather their test cases (see :class:`ReportCounts`)."""
    walker = _Walker(base)
    counts = ReportCounts()
    problems: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        matches, problem = walker.match(pattern)
        if problem:
            problems.append(f"reports: '{pattern}' {problem}; not read")
            continue
        if not matches:
            problems.append(f"reports: nothing matches '{pattern}'")
        for match in matches:
            for rel, why in walker.files(match):
                if why is not None:
                    problems.append(f"reports: '{rel}' {why}; not read")
                    continue
                full = os.path.join(walker.root, rel)
                if rel in seen or not _fresh(full, since):
                    continue
                seen.add(rel)
                if _count(full, rel, counts, problems):
                    counts.paths.append(rel)
    return counts, problems


def _count(path: str, rel: str, counts: ReportCounts, problems: list[str]) -> bool:
    """Add the counts and cases of the report at ``path``; False if it is not JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        problems.append(f"reports: '{rel}' is not JUnit XML: {exc}")
        return False
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if root.tag not in ("testsuite", "testsuites"):
        problems.append(f"reports: '{rel}' is not JUnit XML (root <{root.tag}>)")
        return False
    counts.files += 1
    for suite in suites:
        if suite.find("testsuite") is not None:
            continue  # counted through its children
        cases = suite.findall("testcase")
        if cases:
            counts.tests += len(cases)
            for case in cases:
                read = _case(suite.get("name") or "", case)
                if read.status == "failure":
                    counts.failures += 1
                elif read.status == "error":
                    counts.errors += 1
                elif read.status == "skipped":
                    counts.skipped += 1
                counts.add_case(read)
        else:
            counts.tests += _int(suite.get("tests"))
            counts.failures += _int(suite.get("failures"))
            counts.errors += _int(suite.get("errors"))
            counts.skipped += _int(suite.get("skipped"))
    return True


def _case(suite: str, case: ET.Element) -> ReportCase:
    """A ``<testcase>`` as a :class:`ReportCase`: its status is its first of ``<failure>``,
    ``<error>``, ``<skipped>`` (in that order), else passed."""
    read = ReportCase(suite, case.get("classname") or "", case.get("name") or "", "passed",
                      time=_seconds(case.get("time")))
    status: CaseStatus
    for status in ("failure", "error", "skipped"):
        found = case.find(status)
        if found is not None:
            read.status = status
            text = "".join(found.itertext())
            read.text = text if text.strip() else None
            read.message = found.get("message") or next(
                (line.strip() for line in text.splitlines() if line.strip()), None)
            break
    return read


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0
