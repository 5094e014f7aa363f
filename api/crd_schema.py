"""OpenAPI v3 + CEL schemas of the inference CRDs, built from api/validation.py's rules (hack/gen_crds.py).

Served versions (no conversion webhook, so the `None` strategy only rewrites apiVersion and every
served version's schema must accept an object stored through any other version):
- inferencepools.inference.networking.x-k8s.io: v1alpha1 (the seed's) and v1alpha2, storage v1alpha2.
  extensionRef carries both picker-port names (v1alpha1 `targetPortNumber`, v1alpha2 `portNumber`)
  in both versions, and status carries both `conditions` (v1alpha1) and `parent` (v1alpha2), so
  nothing is pruned when an object is read through the other version. api/parse.py reads each
  version's own name first and the other as an alias.
- inferencemodels.inference.networking.x-k8s.io: v1alpha1 and v1alpha2 (same fields), storage
  v1alpha2; weight minimum is 0 in v1alpha1 and 1 in v1alpha2; v1alpha2's modelName is immutable.
- inferencepools.inference.networking.k8s.io: v1 only.
Label keys of selectors are checked by api/parse.py only: structural schemas cannot constrain map
keys, and a CEL regex over every key risks exceeding the API server's cost budget.
"""

from __future__ import annotations

from typing import Any

from api import validation as v
from api.model import GROUP_GA, GROUP_X

Schema = dict[str, Any]

STORAGE_VERSION_X = "v1alpha2"


def _string(
    description: str,
    *,
    min_len: int | None = None,
    max_len: int | None = None,
    pattern: str | None = None,
    enum: tuple[str, ...] | None = None,
    default: str | None = None,
) -> Schema:
    schema: Schema = {"type": "string", "description": description}
    if default is not None:
        schema["default"] = default
    if enum is not None:
        schema["enum"] = list(enum)
    if min_len is not None:
        schema["minLength"] = min_len
    if max_len is not None:
        schema["maxLength"] = max_len
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def _port(description: str) -> Schema:
    return {
        "type": "integer",
        "format": "int32",
        "minimum": v.PORT_MIN,
        "maximum": v.PORT_MAX,
        "description": description,
    }


def _group(description: str, default: str) -> Schema:
    return _string(description, max_len=v.GROUP_MAX, pattern=v.GROUP_PATTERN, default=default)


def _kind(description: str, default: str) -> Schema:
    return _string(description, min_len=1, max_len=v.KIND_MAX, pattern=v.KIND_PATTERN, default=default)


def _name(description: str) -> Schema:
    return _string(description, min_len=1, max_len=v.OBJECT_NAME_MAX)


def _labels(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "minProperties": v.SELECTOR_MIN,
        "maxProperties": v.SELECTOR_MAX,
        "additionalProperties": _string(
            "Label value.", max_len=v.LABEL_VALUE_MAX, pattern=v.LABEL_VALUE_PATTERN
        ),
    }


def _failure_mode() -> Schema:
    return _string(
        "What the gateway does when the endpoint picker fails or is unreachable.",
        enum=v.FAILURE_MODES,
        default="FailClose",
    )


def _object(description: str, properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _conditions() -> Schema:
    condition = _object(
        "A metav1.Condition.",
        {
            "type": _string("Condition type.", min_len=1, max_len=316),
            "status": _string("Condition status.", enum=("True", "False", "Unknown")),
            "reason": _string("Machine-readable reason (CamelCase).", min_len=1, max_len=1024),
            "message": _string("Human-readable message.", max_len=32768),
            "lastTransitionTime": {"type": "string", "format": "date-time", "description": "Last change."},
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation the condition was computed for.",
            },
        },
        ("type", "status", "reason", "message", "lastTransitionTime"),
    )
    return {
        "type": "array",
        "description": "Conditions, at most one per type.",
        "maxItems": v.CONDITIONS_MAX,
        "items": condition,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    }


def _parent_ref() -> Schema:
    return _object(
        "The Gateway this status entry is about.",
        {
            "group": _group("Group of the parent.", "gateway.networking.k8s.io"),
            "kind": _kind("Kind of the parent.", "Gateway"),
            "name": _name("Name of the parent."),
            "namespace": _string(
                "Namespace of the parent.", min_len=1, max_len=v.NAMESPACE_MAX, pattern=v.NAMESPACE_PATTERN
            ),
        },
        ("name",),
    )


def _root(kind: str, spec: Schema, status: Schema) -> Schema:
    return {
        "type": "object",
        "description": f"{kind} (inference extension for Envoy Gateway).",
        "properties": {
            "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
            "kind": {"type": "string", "description": "REST resource of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }


def pool_x_schema() -> Schema:
    """InferencePool v1alpha1/v1alpha2 (identical: the union of both versions' fields, see module doc)."""
    extension_ref = _object(
        "The endpoint picker (a Service, normally) that chooses an endpoint for each request.",
        {
            "group": _group("Group of the picker reference; empty means the core group.", ""),
            "kind": _kind("Kind of the picker reference.", "Service"),
            "name": _name("Name of the picker reference."),
            "targetPortNumber": _port("v1alpha1 name of the picker port (default 9002)."),
            "portNumber": _port("v1alpha2 name of the picker port (default 9002)."),
            "failureMode": _failure_mode(),
        },
        ("name",),
    )
    spec = _object(
        "Desired state of the pool.",
        {
            "selector": _labels("Labels selecting the model-server pods (same namespace)."),
            "targetPortNumber": _port("Port the model servers listen on."),
            "extensionRef": extension_ref,
        },
        ("selector", "targetPortNumber", "extensionRef"),
    )
    parent = _object(
        "Status of the pool with respect to one Gateway.",
        {"parentRef": _parent_ref(), "conditions": _conditions()},
    )
    status = _object(
        "Observed state of the pool.",
        {
            "conditions": _conditions(),
            "parent": {
                "type": "array",
                "maxItems": v.PARENTS_MAX,
                "items": parent,
                "description": "Per Gateway.",
            },
        },
    )
    return _root("InferencePool", spec, status)


def pool_ga_schema() -> Schema:
    """InferencePool inference.networking.k8s.io/v1."""
    port_ref = _object("A port.", {"number": _port("Port number.")}, ("number",))
    picker = _object(
        "The endpoint picker (a Service, normally) that chooses an endpoint for each request.",
        {
            "group": _group("Group of the picker reference; empty means the core group.", ""),
            "kind": _kind("Kind of the picker reference.", "Service"),
            "name": _name("Name of the picker reference."),
            "port": port_ref,
            "failureMode": _failure_mode(),
        },
        ("name",),
    )
    picker["x-kubernetes-validations"] = [
        {"rule": v.CEL_SERVICE_NEEDS_PORT, "message": v.MSG_SERVICE_NEEDS_PORT}
    ]
    target_ports = {
        "type": "array",
        "description": "Ports the model servers listen on; each pod IP and port is one endpoint.",
        "minItems": 1,
        "maxItems": v.TARGET_PORTS_MAX,
        "items": port_ref,
        "x-kubernetes-list-type": "atomic",
        "x-kubernetes-validations": [
            {"rule": v.CEL_UNIQUE_TARGET_PORTS, "message": v.MSG_UNIQUE_TARGET_PORTS}
        ],
    }
    spec = _object(
        "Desired state of the pool.",
        {
            "selector": _object(
                "Selects the model-server pods (same namespace).",
                {"matchLabels": _labels("Labels the pods must all carry.")},
                ("matchLabels",),
            ),
            "targetPorts": target_ports,
            "appProtocol": _string(
                "Protocol to the model servers.", enum=v.APP_PROTOCOLS, default=v.APP_PROTOCOLS[0]
            ),
            "endpointPickerRef": picker,
        },
        ("selector", "targetPorts"),
    )
    return _root("InferencePool", spec, _pool_ga_status())


def _pool_ga_status() -> Schema:
    """InferencePool v1 status: conditions per parent Gateway, with the controller that wrote them."""
    parent = _object(
        "Status of the pool with respect to one parent.",
        {
            "parentRef": _parent_ref(),
            "conditions": _conditions(),
            "controllerName": _string("Controller that wrote this entry.", min_len=1, max_len=253),
        },
        ("parentRef",),
    )
    return _object(
        "Observed state of the pool.",
        {
            "parents": {
                "type": "array",
                "maxItems": v.PARENTS_MAX,
                "items": parent,
                "x-kubernetes-list-type": "atomic",
                "description": "Per parent (Gateway).",
            }
        },
    )


def model_schema(version: str) -> Schema:
    """InferenceModel v1alpha1 or v1alpha2 (they differ in weight minimum and modelName immutability)."""
    min_weight = v.WEIGHT_MIN_V1ALPHA1 if version == "v1alpha1" else v.WEIGHT_MIN_V1ALPHA2
    model_name = _string(
        "Model name clients send in the request body; unique per pool.", min_len=1, max_len=v.MODEL_NAME_MAX
    )
    if version != "v1alpha1":
        model_name["x-kubernetes-validations"] = [{"rule": v.CEL_IMMUTABLE, "message": v.MSG_IMMUTABLE}]
    target = _object(
        "A model (or LoRA adapter) that receives a share of the traffic.",
        {
            "name": _name("Name the model server knows the model by."),
            "weight": {
                "type": "integer",
                "format": "int32",
                "minimum": min_weight,
                "maximum": v.WEIGHT_MAX,
                "description": "Share of the traffic is weight / sum of weights.",
            },
        },
        ("name",),
    )
    spec = _object(
        "Desired state of the model.",
        {
            "modelName": model_name,
            "criticality": _string("Criticality; unset means Standard.", enum=v.CRITICALITIES),
            "targetModels": {
                "type": "array",
                "description": "Models that serve modelName; empty means modelName itself.",
                "maxItems": v.TARGET_MODELS_MAX,
                "items": target,
                "x-kubernetes-validations": [
                    {"rule": v.CEL_WEIGHTS_ALL_OR_NONE, "message": v.MSG_WEIGHTS_ALL_OR_NONE}
                ],
            },
            "poolRef": _object(
                "The InferencePool (same namespace) that serves this model.",
                {
                    "group": _group("Group of the pool.", GROUP_X),
                    "kind": _kind("Kind of the pool.", "InferencePool"),
                    "name": _name("Name of the pool."),
                },
                ("name",),
            ),
        },
        ("modelName", "poolRef"),
    )
    status = _object("Observed state of the model.", {"conditions": _conditions()})
    return _root("InferenceModel", spec, status)


def _age() -> Schema:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


GIE_BUNDLE_VERSION_ANNOTATION = "inference.networking.k8s.io/bundle-version"
GIE_BUNDLE_VERSION = "v1.6.0"


def _crd(
    group: str,
    kind: str,
    plural: str,
    short_names: list[str],
    versions: list[Schema],
    annotations: dict[str, str],
) -> Schema:
    metadata: Schema = {"name": f"{plural}.{group}"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    }


def _version(name: str, storage: bool, schema: Schema, columns: list[Schema]) -> Schema:
    return {
        "name": name,
        "served": True,
        "storage": storage,
        "additionalPrinterColumns": columns,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {"status": {}},
    }


def crds() -> list[Schema]:
    """Every CRD manifest this project installs, in a stable order."""
    from api.crd_schema_canary import canary_crds  # they build on this module's helpers
    from api.crd_schema_rollout import rollout_crds

    pool_x_columns = [
        {"name": "Target Port", "type": "integer", "jsonPath": ".spec.targetPortNumber"},
        {"name": "Picker", "type": "string", "jsonPath": ".spec.extensionRef.name"},
        _age(),
    ]
    pool_ga_columns = [
        {"name": "Picker", "type": "string", "jsonPath": ".spec.endpointPickerRef.name"},
        _age(),
    ]
    model_columns = [
        {"name": "Model Name", "type": "string", "jsonPath": ".spec.modelName"},
        {"name": "Inference Pool", "type": "string", "jsonPath": ".spec.poolRef.name"},
        {"name": "Criticality", "type": "string", "jsonPath": ".spec.criticality"},
        _age(),
    ]
    return [
        _crd(
            GROUP_X,
            "InferencePool",
            "inferencepools",
            ["xinfpool"],
            [
                _version(ver, ver == STORAGE_VERSION_X, pool_x_schema(), pool_x_columns)
                for ver in ("v1alpha1", "v1alpha2")
            ],
            {},
        ),
        _crd(
            GROUP_X,
            "InferenceModel",
            "inferencemodels",
            ["infmodel"],
            [
                _version(ver, ver == STORAGE_VERSION_X, model_schema(ver), model_columns)
                for ver in ("v1alpha1", "v1alpha2")
            ],
            {},
        ),
        _crd(
            GROUP_GA,
            "InferencePool",
            "inferencepools",
            ["infpool"],
            [_version("v1", True, pool_ga_schema(), pool_ga_columns)],
            {
                # Groups under k8s.io need this annotation or the API server rejects the CRD.
                "api-approved.kubernetes.io": "unapproved, implementation of the GA InferencePool API",
                # The GIE release whose InferencePool schema this is; GIE's conformance suite reads it.
                GIE_BUNDLE_VERSION_ANNOTATION: GIE_BUNDLE_VERSION,
            },
        ),
        *canary_crds(),
        *rollout_crds(),
    ]
