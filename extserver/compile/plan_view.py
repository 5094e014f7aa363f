"""A plain, ordered view of the plan (golden files, debugging)."""

from __future__ import annotations

from typing import Any

from extserver.compile.plan import Plan, PoolPlan


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """A plain, ordered view of the plan for golden files and debugging."""

    def pool_dict(pool: PoolPlan) -> dict[str, Any]:
        return {
            "pool": f"{pool.namespace}/{pool.name}",
            "apiVersion": pool.api_version,
            "attachTo": None
            if pool.attach_to is None
            else {
                "gateway": f"{pool.attach_to.gateway_namespace}/{pool.attach_to.gateway_name}",
                "port": pool.attach_to.port,
            },
            "targetPorts": list(pool.target_ports),
            "picker": None
            if pool.picker is None
            else {
                "target": pool.picker.target_uri,
                "cluster": pool.picker.cluster,
                "failOpen": pool.picker.failure_mode_allow,
                **({} if pool.picker.serves_eds else {"protocol": pool.picker.protocol}),
            },
            **({} if pool.app_protocol == "http" else {"appProtocol": pool.app_protocol}),
            **({} if pool.endpoints is None else {"endpoints": list(pool.endpoints)}),
            "catchAllCluster": pool.catch_all_cluster,
            "extProcFilter": pool.ext_proc_filter,
            **(
                {}
                if not pool.objectives
                else {
                    "objectives": [
                        {"name": o.name, "priority": o.priority, "criticality": o.criticality}
                        for o in pool.objectives
                    ]
                }
            ),
            "models": [
                {
                    **({"matchAny": True} if m.match_any else {"modelName": m.model_name}),
                    "source": m.source,
                    "criticality": m.criticality,
                    "targets": [
                        {"model": t.model, "weight": t.weight, "cluster": t.cluster} for t in m.targets
                    ],
                    **({} if m.sticky is None else {"stickyKey": str(m.sticky)}),
                    **(
                        {}
                        if not m.pins
                        else {
                            "pins": [
                                {"header": p.header, "value": p.value, "target": p.target} for p in m.pins
                            ]
                        }
                    ),
                }
                for m in pool.models
            ],
        }

    return {
        "pools": [pool_dict(p) for p in plan.pools],
        "problems": [
            {
                "object": f"{p.kind} {p.namespace}/{p.name}"
                + (f" ({p.api_version})" if p.api_version else ""),
                "condition": p.condition_type,
                "reason": p.reason,
                "message": p.message,
            }
            for p in plan.problems
        ],
    }
