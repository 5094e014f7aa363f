"""What a conformance run said: per-test results from `go test -v` output, counts from the suite's report."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# GIE v1.6.0's conformance/tests: one ConformanceTest per file (the suite's own count, pinned with it).
SUITE_TESTS = (
    "EppUnAvailableFailOpen",
    "GatewayDestinationEndpointServed",
    "GatewayFollowingEPPRouting",
    "GatewayFollowingEPPRoutingWithDataParallelism",
    "GatewayWeightedAcrossTwoInferencePools",
    "HTTPRouteInvalidInferencePoolRef",
    "HTTPRouteMultipleGatewaysDifferentPools",
    "InferencePoolAccepted",
    "InferencePoolAppProtocol",
    "InferencePoolHTTPRoutePortValidation",
    "InferencePoolInvalidEPPService",
    "InferencePoolMissingEPPRef",
    "HTTPRouteMultipleRulesDifferentPools",
    "InferencePoolResolvedRefsCondition",
)
TOP = "TestConformance"
_RESULT = re.compile(rf"^\s*--- (PASS|FAIL|SKIP): {TOP}/([^/\s]+) \(([\d.]+)s\)")
_RUN = re.compile(rf"^=== RUN\s+{TOP}/([^/\s]+)$")
# testify's failure block ("Error:", "Messages:"), test log lines ("file.go:123: message", the suite's own
# with a timestamp first) and the HTTP helper's retries ("... not ready yet: <why>. CRes: ...").
_TESTIFY = re.compile(r"^\s+(?:Error|Messages):\s+(.*\S)")
_LOG = re.compile(r"^\s+[\w.]+\.go:\d+: (.*\S)")
_TIMESTAMP_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z?: ")
_NOT_READY = re.compile(r"not ready yet: (.*?)(?:\. CRes:|$)")
# A log line that says something went wrong (t.Errorf/t.Fatalf, or the HTTP helper giving up).
_FAILURE_WORDS = re.compile(r"(?i)\b(failed|failure|errors?|timed out|timeout|unexpected)\b")


@dataclass
class TestResult:
    name: str
    outcome: str  # PASS, FAIL, SKIP, or NOT RUN (the suite stopped before it)
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)  # the first failure lines, for the summary


@dataclass(frozen=True)
class Counts:
    passed: int
    failed: int
    skipped: int

    def line(self, version: str) -> str:
        return (
            f"conformance: passed={self.passed} failed={self.failed} skipped={self.skipped} "
            f"(gateway-api-inference-extension {version})"
        )


class OutputReader:
    """Reads the suite's `-test.v` output line by line: which test runs now, and how each one ended."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.current_since = 0.0  # time.monotonic() when `current` started
        self.results: dict[str, TestResult] = {}
        self._lines: dict[str, list[str]] = {}

    def feed(self, line: str) -> TestResult | None:
        """Takes one line; returns the test's result when this line ends a top-level test."""
        line = line.rstrip("\n")
        if match := _RUN.match(line):  # a test starts: the one before it has ended
            self.current, self.current_since = match.group(1), time.monotonic()
            self._lines.setdefault(self.current, [])
            return None
        if match := _RESULT.match(line):
            name = match.group(2)
            result = TestResult(name, match.group(1), float(match.group(3)))
            if result.outcome == "FAIL":
                result.reasons = _reasons(self._lines.get(name, []))
            self.results[name] = result
            if self.current == name:
                self.current = None
            return result
        if self.current is not None:
            self._lines[self.current].append(line)
        return None

    def reasons_so_far(self, name: str) -> list[str]:
        """Failure signs in a test's output before its result line (go test prints results at the end)."""
        return _reasons(self._lines.get(name, []))

    def final(self, names: Iterable[str] = SUITE_TESTS) -> list[TestResult]:
        """Every suite test in order; one never started or never finished counts as NOT RUN."""
        out = [self.results.get(name) or TestResult(name, "NOT RUN") for name in names]
        return out + [r for r in self.results.values() if r.name not in set(names)]


def _reasons(lines: list[str], limit: int = 3) -> list[str]:
    """testify's errors (or else the last plain log line, as t.Fatalf leaves), then the last HTTP retry's."""
    errors: list[str] = []
    last_log = ""
    not_ready = ""
    for line in lines:
        if match := _TESTIFY.match(line):
            if match.group(1) not in errors:
                errors.append(match.group(1))
        elif match := _LOG.match(line):
            text = match.group(1)
            if retry := _NOT_READY.search(text):
                not_ready = retry.group(1)
            elif _FAILURE_WORDS.search(text):
                last_log = _TIMESTAMP_PREFIX.sub("", text)
    reasons = errors[-limit:] or ([last_log] if last_log else [])
    if not_ready:
        reasons.append(f"last response: {not_ready}")
    return [text[:400] for text in reasons]


def report_counts(report: Mapping[str, Any]) -> Counts | None:
    """Core and extended counts of the report's Gateway profile (None if it has no such profile)."""
    for profile in report.get("profiles") or []:
        if profile.get("name") != "Gateway":
            continue
        passed = failed = skipped = 0
        for level in ("core", "extended"):
            stats = (profile.get(level) or {}).get("statistics") or {}
            passed += int(stats.get("Passed", 0))
            failed += int(stats.get("Failed", 0))
            skipped += int(stats.get("Skipped", 0))
        return Counts(passed, failed, skipped)
    return None


def output_counts(results: Iterable[TestResult]) -> Counts:
    """The same counts from the test output, a test that did not run counting as failed."""
    outcomes = [r.outcome for r in results]
    return Counts(
        outcomes.count("PASS"),
        outcomes.count("FAIL") + outcomes.count("NOT RUN"),
        outcomes.count("SKIP"),
    )
