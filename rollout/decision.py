"""What a rollout does after each window's verdict: promote a step, hold, or roll back. A pure state machine.

The state is plain data, so the controller keeps it in the rollout's status and resumes from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from rollout.judgement import Result, Verdict


class Decision(StrEnum):
    PROMOTE_STEP = "PromoteStep"
    HOLD = "Hold"
    ROLLBACK = "Rollback"


@dataclass(frozen=True)
class DecisionConfig:
    """How many failed checks cause a rollback, and when waiting for samples becomes a failure."""

    max_failed_checks: int = 2  # failed windows over the whole rollout; a clear critical failure needs one
    passes_per_step: int = 1  # consecutive passing windows before the next step
    max_inconclusive_windows: int = 5  # consecutive windows without enough samples
    inconclusive_deadline_s: float | None = None  # or this long without a conclusive window


@dataclass(frozen=True)
class RolloutState:
    """Counters across windows and the last decision with its reason."""

    decision: Decision = Decision.HOLD
    reason: str = "not analysed yet"
    failed_checks: int = 0
    passes: int = 0  # consecutive passes in the current step
    inconclusive_windows: int = 0  # consecutive
    inconclusive_since: float | None = None  # when the current run of inconclusive windows began

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def next_state(
    state: RolloutState, verdict: Verdict, config: DecisionConfig, now: float = 0.0
) -> RolloutState:
    """The state after one window's verdict, judged at `now` (seconds, any clock the caller keeps)."""
    if state.decision is Decision.ROLLBACK:  # final: a rolled-back candidate stays rolled back
        return state
    if verdict.result is Result.FAIL:
        failed = state.failed_checks + 1
        cleared = replace(
            state, failed_checks=failed, passes=0, inconclusive_windows=0, inconclusive_since=None
        )
        if verdict.clear_failure:
            return replace(
                cleared, decision=Decision.ROLLBACK, reason=f"clear critical regression: {verdict.reason}"
            )
        if failed >= config.max_failed_checks:
            why = f"{failed} failed checks (limit {config.max_failed_checks}): {verdict.reason}"
            return replace(cleared, decision=Decision.ROLLBACK, reason=why)
        why = f"failed check {failed} of {config.max_failed_checks}: {verdict.reason}"
        return replace(cleared, decision=Decision.HOLD, reason=why)
    if verdict.result is Result.INCONCLUSIVE:
        count = state.inconclusive_windows + 1
        since = state.inconclusive_since if state.inconclusive_since is not None else now
        waiting = replace(state, inconclusive_windows=count, inconclusive_since=since)
        timed_out = (
            config.inconclusive_deadline_s is not None and now - since >= config.inconclusive_deadline_s
        )
        if count >= config.max_inconclusive_windows or timed_out:
            why = f"inconclusive for {count} windows ({now - since:g}s): {verdict.reason}"
            return replace(waiting, decision=Decision.ROLLBACK, reason=why)
        return replace(waiting, decision=Decision.HOLD, reason=f"inconclusive ({count}): {verdict.reason}")
    passes = state.passes + 1
    passed = replace(state, passes=passes, inconclusive_windows=0, inconclusive_since=None)
    if passes >= config.passes_per_step:
        return replace(passed, decision=Decision.PROMOTE_STEP, passes=0, reason=f"passed: {verdict.reason}")
    why = f"passed {passes} of {config.passes_per_step}: {verdict.reason}"
    return replace(passed, decision=Decision.HOLD, reason=why)
