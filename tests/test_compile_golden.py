"""Golden tests: tests/golden/in/<case>.yaml -> out/<case>.{plan,attach,clusters,listeners,routes}.yaml."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import yaml

from extserver.compile import build_plan, compile_translation, patch_cluster, patch_route, plan_to_dict
from extserver.compile.attach import assign_attach_to
from tests.compile_cases import CASES, GOLDEN, OPTIONS, as_dicts, run_case

KINDS = ("plan", "attach", "clusters", "listeners", "routes")


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(OrderedDict, lambda d, v: d.represent_dict(v.items()))


def _render(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=True, width=200, allow_unicode=True)


def _outputs(case: str) -> dict[str, str]:
    result = run_case(case)
    plan = plan_to_dict(build_plan(result.inputs))
    plan["invalidObjects"] = result.invalid
    plan["translationProblems"] = {
        gw: [
            f"{p.kind} {p.namespace}/{p.name}: {p.condition_type}={p.reason}: {p.message}" for p in g.problems
        ]
        for gw, g in result.gateways.items()
    }
    built = build_plan(result.inputs)
    # The attach-to decision on what EG sent (after the Route and Cluster hooks), per Gateway.
    attach = {
        gw: assign_attach_to(built, g.eg.listeners, g.eg.routes).to_dict()
        for gw, g in result.gateways.items()
    }
    return {
        "plan": _render(plan),
        "attach": _render(attach),
        "clusters": _render({gw: as_dicts(g.clusters) for gw, g in result.gateways.items()}),
        "listeners": _render({gw: as_dicts(g.listeners) for gw, g in result.gateways.items()}),
        "routes": _render({gw: as_dicts(g.routes) for gw, g in result.gateways.items()}),
    }


def _out_path(case: str, kind: str) -> Path:
    return GOLDEN / "out" / f"{case}.{kind}.yaml"


def test_cases_exist() -> None:
    assert CASES, "no golden cases found"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, request: pytest.FixtureRequest) -> None:
    outputs = _outputs(case)
    update = request.config.getoption("--update-golden")
    for kind in KINDS:
        path = _out_path(case, kind)
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(outputs[kind])
            continue
        assert path.exists(), f"{path} missing: run pytest --update-golden"
        assert outputs[kind] == path.read_text(), f"{path} differs: review, then pytest --update-golden"


def test_no_orphan_outputs(request: pytest.FixtureRequest) -> None:
    expected = {_out_path(case, kind).name for case in CASES for kind in KINDS}
    orphans = [p for p in (GOLDEN / "out").glob("*.yaml") if p.name not in expected]
    if request.config.getoption("--update-golden"):
        for orphan in orphans:
            orphan.unlink()
        return
    assert not orphans, f"orphan golden outputs (delete or pytest --update-golden): {orphans}"


@pytest.mark.parametrize("case", CASES)
def test_idempotent(case: str) -> None:
    """A second pass over our own output changes nothing, byte for byte; so do the hooks."""
    result = run_case(case)
    for gateway in result.gateways.values():
        again = compile_translation(
            gateway.clusters, gateway.listeners, gateway.routes, result.inputs, OPTIONS
        )
        for first, second in (
            (gateway.clusters, again.clusters),
            (gateway.listeners, again.listeners),
            (gateway.routes, again.routes),
        ):
            assert [m.SerializeToString(deterministic=True) for m in first] == [
                m.SerializeToString(deterministic=True) for m in second
            ]
        assert again.problems == gateway.problems
        for call_route, resources in gateway.eg.route_extension_resources.items():
            for rc in gateway.eg.routes:
                for vhost in rc.virtual_hosts:
                    for route in vhost.routes:
                        if route.name == call_route:
                            assert (
                                patch_route(route, resources, list(vhost.domains), result.inputs, OPTIONS)
                                is None
                            )
        for name, resources in gateway.eg.cluster_extension_resources.items():
            for cluster in gateway.eg.clusters:
                if cluster.name == name:
                    assert patch_cluster(cluster, resources, result.inputs, OPTIONS) is None
