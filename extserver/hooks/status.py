"""Compile problems -> status conditions on InferencePools, InferenceModels and the canary kinds.

Every translation reports: each model, rewrite and objective gets Accepted (False with the reason of
its problem, else True), and each model and rewrite AnnotationsValid (False when a canary annotation is
invalid and left out); each pool this translation serves gets Accepted and ResolvedRefs for each
Gateway it serves, as its parent (v1alpha2/v1 pools keep conditions per parent Gateway; v1alpha1 pools,
models and the canary kinds keep one list).
The writer decides where conditions go (API server or log) and writes only what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from api.model import V1ALPHA1, InferenceModel, InferencePool
from api.parse import KIND_MODEL, KIND_POOL
from api.rewrite import KIND_REWRITE, InferenceModelRewrite, InferenceObjective
from api.sources.status import ConditionUpdate, ConditionWriter, ParentRef, PoolRef
from extserver.compile import Problem
from extserver.compile.inputs import Condition

log = structlog.get_logger("extserver.hooks.status")

TRUE, FALSE = "True", "False"
# Identical reports (nothing changed) are skipped for this long; one per Gateway EG translates is kept.
RECHECK_SECONDS = 60.0
RECENT_REPORTS = 16


@dataclass(frozen=True)
class StatusReport:
    """What one translation found: all known objects, their problems, and the Gateways pools serve."""

    pools: tuple[InferencePool, ...]
    models: tuple[InferenceModel, ...]
    problems: tuple[Problem, ...]
    pool_gateways: Mapping[tuple[str, str], tuple[str, ...]]
    # The Gateways ("ns/name") this translation is for, when known: a pool none of its routes reach
    # any more loses its status entry for them.
    gateways: frozenset[str] = frozenset()
    # InferenceModelRewrites and InferenceObjectives (both forms): each gets Accepted, as models do.
    canary: tuple[InferenceModelRewrite | InferenceObjective, ...] = ()


def _by_object(problems: Sequence[Problem]) -> dict[tuple[str, str, str], list[Problem]]:
    out: dict[tuple[str, str, str], list[Problem]] = {}
    for problem in problems:
        out.setdefault((problem.kind, problem.namespace, problem.name), []).append(problem)
    return out


def _condition(
    obj: InferencePool | InferenceModel | InferenceModelRewrite | InferenceObjective,
    kind: str,
    condition_type: str,
    problems: Sequence[Problem],
    parent: ParentRef | None,
) -> ConditionUpdate:
    """False with the first problem's reason (all messages joined) when there are problems, else True."""
    relevant = [
        p for p in problems if p.condition_type == condition_type and p.api_version in ("", obj.api_version)
    ]
    status, reason, message = TRUE, condition_type, ""
    if relevant:
        status, reason = FALSE, relevant[0].reason
        message = "; ".join(dict.fromkeys(p.message for p in relevant))
    return ConditionUpdate(
        kind,
        obj.api_version,
        obj.meta.namespace,
        obj.meta.name,
        condition_type,
        status,
        reason,
        message,
        obj.meta.generation,
        parent,
    )


def _parent(gateway: str) -> ParentRef:
    namespace, _, name = gateway.partition("/")
    return ParentRef(name=name, namespace=namespace or None)


def condition_updates(report: StatusReport) -> list[ConditionUpdate]:
    """The conditions `report` implies, in a stable order (pure)."""
    problems = _by_object(report.problems)
    updates: list[ConditionUpdate] = []
    for model in sorted(report.models, key=lambda m: (m.meta.namespace, m.meta.name)):
        found = problems.get((KIND_MODEL, model.meta.namespace, model.meta.name), [])
        updates.append(_condition(model, KIND_MODEL, Condition.ACCEPTED, found, None))
        # Always written: a fixed annotation must turn a False into True (annotations bump no generation).
        updates.append(_condition(model, KIND_MODEL, Condition.ANNOTATIONS_VALID, found, None))
    for obj in sorted(report.canary, key=lambda c: (type(c).__name__, c.meta.namespace, c.meta.name)):
        kind = type(obj).__name__  # the class names are the kinds
        found = problems.get((kind, obj.meta.namespace, obj.meta.name), [])
        updates.append(_condition(obj, kind, Condition.ACCEPTED, found, None))
        if kind == KIND_REWRITE:  # the canary annotations apply to rewrites as to InferenceModels
            updates.append(_condition(obj, kind, Condition.ANNOTATIONS_VALID, found, None))
    for pool in sorted(report.pools, key=lambda p: (p.meta.namespace, p.meta.name)):
        key = (pool.meta.namespace, pool.meta.name)
        found = problems.get((KIND_POOL, *key), [])
        gateways = report.pool_gateways.get(key, ())
        if not gateways and pool.attach_to is not None and found:
            gateways = (f"{pool.attach_to.gateway_namespace}/{pool.attach_to.gateway_name}",)
        if not gateways and not found:
            continue  # not served by this translation: another Gateway's translation reports it
        if pool.api_version == V1ALPHA1:
            parents: list[ParentRef | None] = [None]
        elif gateways:
            parents = [_parent(g) for g in gateways]
        else:
            # v1alpha2/v1 keep conditions per Gateway, and no Gateway routes to this pool: log only.
            for problem in found:
                log.warning(
                    "pool problem without a parent Gateway", pool=f"{key[0]}/{key[1]}", reason=problem.reason
                )
            continue
        for parent in parents:
            for condition_type in (Condition.ACCEPTED, Condition.RESOLVED_REFS):
                updates.append(_condition(pool, KIND_POOL, condition_type, found, parent))
    return updates


def parent_removals(report: StatusReport) -> list[tuple[PoolRef, ParentRef]]:
    """(pool, Gateway) pairs of this translation's Gateways that no longer route to the pool (pure)."""
    out: list[tuple[PoolRef, ParentRef]] = []
    for pool in sorted(report.pools, key=lambda p: (p.meta.namespace, p.meta.name)):
        if pool.api_version == V1ALPHA1:
            continue
        serving = set(report.pool_gateways.get((pool.meta.namespace, pool.meta.name), ()))
        if pool.attach_to is not None:
            serving.add(f"{pool.attach_to.gateway_namespace}/{pool.attach_to.gateway_name}")
        ref = PoolRef(pool.api_version, pool.meta.namespace, pool.meta.name)
        out.extend((ref, _parent(gateway)) for gateway in sorted(report.gateways - serving))
    return out


class ConditionReporter:
    """Turns each translation's StatusReport into conditions on a writer (API server or log).

    With `background`, report() returns at once and a task writes the latest report: EG calls the hook
    with no deadline, and a slow API server must not stall translation. Older unwritten reports are
    superseded by newer ones (each report is complete).
    """

    def __init__(
        self, writer: ConditionWriter, background: bool = False, recheck_seconds: float = RECHECK_SECONDS
    ) -> None:
        self.writer = writer
        self.background = background
        self.recheck_seconds = recheck_seconds
        self._pending: StatusReport | None = None
        self._worker: asyncio.Task[None] | None = None
        self._recent: list[tuple[StatusReport, float]] = []

    async def report(self, report: StatusReport) -> None:
        if self._seen_recently(report):
            return
        if not self.background:
            await self._write(report)
            return
        self._pending = report
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())

    async def flush(self) -> None:
        """Wait until every report handed in so far is written (tests, shutdown)."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _seen_recently(self, report: StatusReport) -> bool:
        """True for a report equal to one of the last few (EG repeats translations; one per Gateway)
        handed in less than recheck_seconds ago. Rechecking after that retries writes that failed."""
        now = time.monotonic()
        self._recent = [(r, at) for r, at in self._recent if now - at < self.recheck_seconds]
        if any(r == report for r, _ in self._recent):
            return True
        self._recent = [*self._recent[-(RECENT_REPORTS - 1) :], (report, now)]
        return False

    async def _drain(self) -> None:
        while self._pending is not None:
            report, self._pending = self._pending, None
            await self._write(report)

    async def _write(self, report: StatusReport) -> None:
        for pool, parent in parent_removals(report):
            try:
                await self.writer.remove_parent(pool, parent)
            except Exception as exc:  # as below: the other objects' status still gets written
                log.warning("status parent not removed", pool=f"{pool.namespace}/{pool.name}", error=str(exc))
        for update in condition_updates(report):
            try:
                await self.writer.set_condition(update)
            except Exception as exc:  # one object's failure must not stop the others' conditions
                log.warning(
                    "status condition not written",
                    object=update.object,
                    error=f"{type(exc).__name__}: {exc}",
                )
