"""The canary kinds in api/: round trip, defaults, the priority mapping, the store, and what the
extension server digests per Gateway."""

from __future__ import annotations

from typing import Any

import pytest

from api.model import GROUP_GA, V1ALPHA2, Criticality
from api.parse import owns, parse_object, to_dict
from api.rewrite import LLMD_V1ALPHA2, InferenceModelRewrite, InferenceObjective, criticality_of
from api.sources.status import with_condition
from api.sources.store import ObjectStore
from extserver.revisions import gateway_digests

POOL = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
    "kind": "InferencePool",
    "metadata": {
        "name": "pool",
        "namespace": "default",
        "annotations": {"inference.networking.x-k8s.io/attach-to": "name: gw\nport: 8081\n"},
    },
    "spec": {"selector": {"app": "vllm"}, "targetPortNumber": 8000, "extensionRef": {"name": "picker"}},
}


def _rewrite(version: str = LLMD_V1ALPHA2, weight: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": version,
        "kind": "InferenceModelRewrite",
        "metadata": {"name": "r", "namespace": "default", "generation": weight},
        "spec": {
            "poolRef": {"name": "pool"},
            "rules": [
                {
                    "matches": [{"model": {"value": "m"}}],
                    "targets": [{"modelRewrite": "a", "weight": weight}],
                },
                {"targets": [{"modelRewrite": "b"}, {"modelRewrite": "c"}]},
            ],
        },
    }


def _objective(priority: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"poolRef": {"name": "pool"}}
    if priority is not None:
        spec["priority"] = priority
    return {
        "apiVersion": V1ALPHA2,
        "kind": "InferenceObjective",
        "metadata": {"name": "o", "namespace": "default"},
        "spec": spec,
    }


@pytest.mark.parametrize("version", [LLMD_V1ALPHA2, V1ALPHA2])
def test_a_rewrite_round_trips_with_its_defaults_written_out(version: str) -> None:
    rewrite = parse_object(_rewrite(version))
    assert isinstance(rewrite, InferenceModelRewrite)
    assert rewrite.pool_ref.group == GROUP_GA and rewrite.pool_ref.kind == "InferencePool"
    assert [r.generic for r in rewrite.rules] == [False, True]
    assert [t.weight for t in rewrite.rules[1].weighted_targets()] == [1, 1]  # equal shares
    written = to_dict(rewrite)
    assert written["spec"]["rules"][0]["matches"] == [{"model": {"type": "Exact", "value": "m"}}]
    assert parse_object(written) == rewrite


@pytest.mark.parametrize(
    ("priority", "criticality"),
    [
        (None, Criticality.STANDARD),
        (0, Criticality.STANDARD),
        (-1, Criticality.SHEDDABLE),
        (3, Criticality.CRITICAL),
    ],
)
def test_objective_priority_maps_to_criticality(priority: int | None, criticality: Criticality) -> None:
    objective = parse_object(_objective(priority))
    assert isinstance(objective, InferenceObjective)
    assert objective.effective_priority == (priority or 0)
    assert objective.criticality is criticality is criticality_of(objective.effective_priority)
    assert parse_object(to_dict(objective)) == objective


def test_only_the_served_versions_are_owned() -> None:
    assert owns(_rewrite()) and owns(_rewrite(V1ALPHA2)) and owns(_objective(1))
    assert not owns({**_rewrite(), "apiVersion": "llm-d.ai/v1alpha1"})
    assert not owns({**_objective(1), "apiVersion": "inference.networking.k8s.io/v1"})


def test_the_store_keeps_both_forms_and_lists_them_per_pool() -> None:
    store = ObjectStore()
    store.apply(upserts=[POOL, _rewrite(), _rewrite(V1ALPHA2), _objective(-1)])
    snapshot = store.snapshot()
    assert sorted(snapshot.rewrites) == [f"{V1ALPHA2} default/r", f"{LLMD_V1ALPHA2} default/r"]
    assert [type(c).__name__ for c in snapshot.canary_for_pool("default/pool")] == [
        "InferenceModelRewrite",
        "InferenceModelRewrite",
        "InferenceObjective",
    ]


def test_a_rewrite_change_changes_the_gateways_digest() -> None:
    """The extension server makes EG re-translate a Gateway when its digest changes."""
    digests = []
    for weight in (1, 2):
        store = ObjectStore()
        store.apply(upserts=[POOL, _rewrite(weight=weight)])
        digests.append(gateway_digests(store.snapshot(), {})[("default", "gw")])
    assert digests[0] != digests[1]


def test_a_rewrite_condition_goes_to_status_conditions() -> None:
    condition = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}
    status = with_condition({}, "InferenceModelRewrite", LLMD_V1ALPHA2, condition, None, None, "now")
    assert status == {"conditions": [{**condition, "lastTransitionTime": "now"}]}
