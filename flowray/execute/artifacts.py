"""What a job leaves behind: artifact files copied into the run record, JUnit report counts."""

from __future__ import annotations

import glob
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class ReportCounts:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    files: int = 0

    @property
    def passed(self) -> int:
        return max(0, self.tests - self.failures - self.errors - self.skipped)

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        parts = [f"{self.passed} passed", f"{self.failures + self.errors} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return ", ".join(parts)


def _matches(base: str, patterns: list[str]) -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        full = os.path.join(base, pattern)
        for path in sorted(glob.glob(full, recursive=True)):
            if path not in found:
                found.append(path)
    return found


def collect_artifacts(base: str, patterns: list[str], dest: str) -> tuple[list[str], list[str]]:
    """Copy files matching ``patterns`` (relative to ``base``) below ``dest``.

    Returns (paths copied, relative to ``base``; problems). A pattern may not reach outside
    ``base``.
    """
    copied: list[str] = []
    problems: list[str] = []
    root = os.path.realpath(base)
    for pattern in patterns:
        if not _matches(base, [pattern]):
            problems.append(f"artifacts: nothing matches '{pattern}'")
    for path in _matches(base, patterns):
        real = os.path.realpath(path)
        if not (real == root or real.startswith(root + os.sep)):
            problems.append(f"artifacts: '{path}' is outside the workspace; not collected")
            continue
        rel = os.path.relpath(real, root)
        target = os.path.join(dest, rel)
        try:
            if os.path.isdir(real):
                shutil.copytree(real, target, dirs_exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(real, target)
        except OSError as exc:
            problems.append(f"artifacts: cannot copy '{rel}': {exc.strerror or exc}")
            continue
        copied.append(rel)
    return copied, problems


def read_reports(base: str, patterns: list[str]) -> tuple[ReportCounts, list[str]]:
    """Sum the test counts of the JUnit XML files matching ``patterns``."""
    counts = ReportCounts()
    problems: list[str] = [
        f"reports: nothing matches '{p}'" for p in patterns if not _matches(base, [p])
    ]
    for path in _matches(base, patterns):
        if os.path.isdir(path):
            continue
        rel = os.path.relpath(path, base)
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:
            problems.append(f"reports: '{rel}' is not JUnit XML: {exc}")
            continue
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        if root.tag not in ("testsuite", "testsuites"):
            problems.append(f"reports: '{rel}' is not JUnit XML (root <{root.tag}>)")
            continue
        counts.files += 1
        for suite in suites:
            if suite.find("testsuite") is not None:
                continue  # counted through its children
            cases = suite.findall("testcase")
            if cases:
                counts.tests += len(cases)
                for case in cases:
                    if case.find("failure") is not None:
                        counts.failures += 1
                    elif case.find("error") is not None:
                        counts.errors += 1
                    elif case.find("skipped") is not None:
                        counts.skipped += 1
            else:
                counts.tests += int(suite.get("tests", 0) or 0)
                counts.failures += int(suite.get("failures", 0) or 0)
                counts.errors += int(suite.get("errors", 0) or 0)
                counts.skipped += int(suite.get("skipped", 0) or 0)
    return counts, problems
