"""Kubernetes dicts <-> api.model objects for every served version: defaults, validation, round-trip."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api import validation as v
from api.attach_to import AttachToError, parse_attach_to, render_attach_to
from api.contract import ANNOTATION_ATTACH_TO
from api.errors import ValidationError
from api.model import (
    DEFAULT_PICKER_PORT,
    GROUP_X,
    MODEL_API_VERSIONS,
    POOL_API_VERSIONS,
    V1,
    V1ALPHA1,
    AttachTo,
    Criticality,
    FailureMode,
    InferenceModel,
    InferencePool,
    ObjectMeta,
    PickerRef,
    PoolRef,
    TargetModel,
)
from api.parse_canary import canary_spec, owns_canary, parse_canary
from api.parse_rollout import owns_rollout, parse_rollout, rollout_spec
from api.rewrite import KIND_REWRITE, InferenceModelRewrite, InferenceObjective
from api.rollout import KIND_ROLLOUT, InferenceRollout
from api.validation import FieldErrors

KIND_POOL = "InferencePool"
KIND_MODEL = "InferenceModel"
DEFAULT_NAMESPACE = "default"
Parsed = InferencePool | InferenceModel | InferenceModelRewrite | InferenceObjective | InferenceRollout

# v1alpha1 calls the picker port extensionRef.targetPortNumber, v1alpha2 calls it portNumber. Both CRD
# versions carry both names (see hack/gen_crds.py: no conversion webhook), so each version reads its
# own name first and the other as an alias.
_PICKER_PORT_KEYS = {V1ALPHA1: ("targetPortNumber", "portNumber")}
_PICKER_PORT_KEYS_DEFAULT = ("portNumber", "targetPortNumber")


def owns(obj: Mapping[str, Any]) -> bool:
    """True for InferencePool (all three versions), InferenceModel (v1alpha1, v1alpha2) and the canary
    kinds InferenceModelRewrite and InferenceObjective (llm-d.ai and x-k8s v1alpha2), and this project's
    InferenceRollout (extension.inference-gateway.io/v1alpha1)."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if owns_canary(obj) or owns_rollout(obj):
        return True
    if kind == KIND_POOL:
        return api_version in POOL_API_VERSIONS
    if kind == KIND_MODEL:
        return api_version in MODEL_API_VERSIONS
    return False


def describe(obj: Mapping[str, Any]) -> str:
    """`<Kind> <namespace>/<name>` of a raw object, for messages; tolerant of missing fields."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    return f"{obj.get('kind') or '<no kind>'} {namespace}/{meta.get('name') or '<no name>'}"


def parse_object(obj: Mapping[str, Any]) -> Parsed:
    """Apply defaults and check every rule; raise ValidationError listing all problems found."""
    label = describe(obj)
    if not owns(obj):
        raise ValidationError(
            [
                f"{label}: apiVersion {obj.get('apiVersion')!r} kind {obj.get('kind')!r} is not an "
                "inference kind this project serves"
            ]
        )
    api_version = str(obj["apiVersion"])
    errors = FieldErrors()
    meta = _parse_meta(obj, errors)
    spec = errors.mapping(obj, "spec", "spec", required=True)
    result: Parsed | None = None
    if spec is not None and meta is not None:
        if owns_rollout(obj):
            result = parse_rollout(meta, spec, errors)
        elif owns_canary(obj):
            result = parse_canary(api_version, str(obj["kind"]), meta, spec, errors)
        elif obj["kind"] == KIND_MODEL:
            result = _parse_model(api_version, meta, spec, errors)
        elif api_version == V1:
            result = _parse_pool_ga(meta, spec, errors)
        else:
            result = _parse_pool_x(api_version, meta, spec, errors)
    if errors or result is None:
        raise ValidationError([f"{label}: {item}" for item in errors.items])
    return result


def _parse_meta(obj: Mapping[str, Any], errors: FieldErrors) -> ObjectMeta | None:
    meta = errors.mapping(obj, "metadata", "metadata", required=True)
    if meta is None:
        return None
    name = errors.string(
        meta,
        "name",
        "metadata.name",
        required=True,
        min_len=1,
        max_len=v.OBJECT_NAME_MAX,
        pattern=v.DNS_SUBDOMAIN_PATTERN,
    )
    namespace = errors.string(
        meta,
        "namespace",
        "metadata.namespace",
        min_len=1,
        max_len=v.NAMESPACE_MAX,
        pattern=v.NAMESPACE_PATTERN,
    )
    uid = errors.string(meta, "uid", "metadata.uid")
    resource_version = errors.string(meta, "resourceVersion", "metadata.resourceVersion")
    generation = errors.integer(meta, "generation", "metadata.generation", minimum=0, maximum=2**63 - 1)
    labels_map = errors.mapping(meta, "labels", "metadata.labels", required=False)
    labels = errors.labels(labels_map, "metadata.labels") if labels_map is not None else ()
    annotations_map = errors.mapping(meta, "annotations", "metadata.annotations", required=False)
    annotations: list[tuple[str, str]] = []
    for key, value in (annotations_map or {}).items():
        if not isinstance(value, str):
            errors.add(f"metadata.annotations[{key}]", "must be a string")
        else:
            annotations.append((str(key), value))
    created = meta.get("creationTimestamp")
    if name is None:
        return None
    return ObjectMeta(
        namespace=namespace or DEFAULT_NAMESPACE,
        name=name,
        uid=uid or "",
        resource_version=resource_version or "",
        generation=generation or 0,
        creation_timestamp=v.rfc3339(created) if created is not None else "",
        labels=labels,
        annotations=tuple(sorted(annotations)),
    )


def _attach_to(meta: ObjectMeta, errors: FieldErrors) -> AttachTo | None:
    text = dict(meta.annotations).get(ANNOTATION_ATTACH_TO)
    if text is None:
        return None
    try:
        return parse_attach_to(text, meta.namespace)
    except AttachToError as exc:
        errors.items.extend(exc.errors)
        return None


def _selector(
    spec: Mapping[str, Any], key: str, path: str, errors: FieldErrors
) -> tuple[tuple[str, str], ...]:
    labels = errors.mapping(spec, key, path, required=True)
    if labels is None:
        return ()
    if not v.SELECTOR_MIN <= len(labels) <= v.SELECTOR_MAX:
        errors.add(path, f"must have between {v.SELECTOR_MIN} and {v.SELECTOR_MAX} labels")
        return ()
    return errors.labels(labels, path)


def _picker_common(
    ref: Mapping[str, Any], path: str, errors: FieldErrors
) -> tuple[str | None, str, str, FailureMode]:
    name = errors.string(ref, "name", f"{path}.name", required=True, min_len=1, max_len=v.OBJECT_NAME_MAX)
    group = errors.string(ref, "group", f"{path}.group", max_len=v.GROUP_MAX, pattern=v.GROUP_PATTERN)
    kind = errors.string(ref, "kind", f"{path}.kind", min_len=1, max_len=v.KIND_MAX, pattern=v.KIND_PATTERN)
    mode = errors.string(ref, "failureMode", f"{path}.failureMode", enum=v.FAILURE_MODES)
    failure_mode = FailureMode(mode) if mode is not None else FailureMode.FAIL_CLOSE
    return name, group if group is not None else "", kind if kind is not None else "Service", failure_mode


def _parse_pool_x(
    api_version: str, meta: ObjectMeta, spec: Mapping[str, Any], errors: FieldErrors
) -> InferencePool | None:
    errors.unknown_fields(spec, ("selector", "targetPortNumber", "extensionRef"), "spec")
    selector = _selector(spec, "selector", "spec.selector", errors)
    target_port = errors.integer(
        spec,
        "targetPortNumber",
        "spec.targetPortNumber",
        required=True,
        minimum=v.PORT_MIN,
        maximum=v.PORT_MAX,
    )
    picker: PickerRef | None = None
    ref = errors.mapping(spec, "extensionRef", "spec.extensionRef", required=True)
    if ref is not None:
        path = "spec.extensionRef"
        errors.unknown_fields(
            ref, ("group", "kind", "name", "targetPortNumber", "portNumber", "failureMode"), path
        )
        name, group, kind, failure_mode = _picker_common(ref, path, errors)
        port: int | None = None
        for key in _PICKER_PORT_KEYS.get(api_version, _PICKER_PORT_KEYS_DEFAULT):
            value = errors.integer(ref, key, f"{path}.{key}", minimum=v.PORT_MIN, maximum=v.PORT_MAX)
            port = port if port is not None else value
        if name is not None:
            picker = PickerRef(name, port or DEFAULT_PICKER_PORT, group, kind, failure_mode)
    attach_to = _attach_to(meta, errors)
    if errors or picker is None or target_port is None:
        return None
    return InferencePool(api_version, meta, selector, (target_port,), picker, "http", attach_to)


def _parse_pool_ga(meta: ObjectMeta, spec: Mapping[str, Any], errors: FieldErrors) -> InferencePool | None:
    errors.unknown_fields(spec, ("selector", "targetPorts", "appProtocol", "endpointPickerRef"), "spec")
    selector: tuple[tuple[str, str], ...] = ()
    sel = errors.mapping(spec, "selector", "spec.selector", required=True)
    if sel is not None:
        errors.unknown_fields(sel, ("matchLabels",), "spec.selector")
        selector = _selector(sel, "matchLabels", "spec.selector.matchLabels", errors)
    ports = _target_ports(spec, errors)
    app_protocol = errors.string(spec, "appProtocol", "spec.appProtocol", enum=v.APP_PROTOCOLS) or "http"
    picker: PickerRef | None = None
    ref = errors.mapping(spec, "endpointPickerRef", "spec.endpointPickerRef", required=False)
    if ref is not None:
        path = "spec.endpointPickerRef"
        errors.unknown_fields(ref, ("group", "kind", "name", "port", "failureMode"), path)
        name, group, kind, failure_mode = _picker_common(ref, path, errors)
        port: int | None = None
        port_obj = errors.mapping(ref, "port", f"{path}.port", required=False)
        if port_obj is not None:
            errors.unknown_fields(port_obj, ("number",), f"{path}.port")
            port = errors.integer(
                port_obj,
                "number",
                f"{path}.port.number",
                required=True,
                minimum=v.PORT_MIN,
                maximum=v.PORT_MAX,
            )
        elif kind == "Service":
            errors.add(path, v.MSG_SERVICE_NEEDS_PORT)
        if name is not None:
            picker = PickerRef(name, port or DEFAULT_PICKER_PORT, group, kind, failure_mode)
    attach_to = _attach_to(meta, errors)
    if errors or (ref is not None and picker is None) or not ports:
        return None
    return InferencePool(V1, meta, selector, ports, picker, app_protocol, attach_to)


def _target_ports(spec: Mapping[str, Any], errors: FieldErrors) -> tuple[int, ...]:
    items = spec.get("targetPorts")
    if items is None:
        errors.add("spec.targetPorts", "required")
        return ()
    if not isinstance(items, list):
        errors.add("spec.targetPorts", "must be a list")
        return ()
    if not 1 <= len(items) <= v.TARGET_PORTS_MAX:
        errors.add("spec.targetPorts", f"must have between 1 and {v.TARGET_PORTS_MAX} items")
        return ()
    ports: list[int] = []
    for i, item in enumerate(items):
        path = f"spec.targetPorts[{i}]"
        if not isinstance(item, Mapping):
            errors.add(path, "must be an object")
            continue
        errors.unknown_fields(item, ("number",), path)
        number = errors.integer(
            item, "number", f"{path}.number", required=True, minimum=v.PORT_MIN, maximum=v.PORT_MAX
        )
        if number is not None:
            ports.append(number)
    if len(set(ports)) != len(ports):
        errors.add("spec.targetPorts", v.MSG_UNIQUE_TARGET_PORTS)
    return tuple(ports)


def _parse_model(
    api_version: str, meta: ObjectMeta, spec: Mapping[str, Any], errors: FieldErrors
) -> InferenceModel | None:
    errors.unknown_fields(spec, ("modelName", "criticality", "targetModels", "poolRef"), "spec")
    model_name = errors.string(
        spec, "modelName", "spec.modelName", required=True, min_len=1, max_len=v.MODEL_NAME_MAX
    )
    crit = errors.string(spec, "criticality", "spec.criticality", enum=v.CRITICALITIES)
    targets = _target_models(api_version, spec, errors)
    pool_ref: PoolRef | None = None
    ref = errors.mapping(spec, "poolRef", "spec.poolRef", required=True)
    if ref is not None:
        path = "spec.poolRef"
        errors.unknown_fields(ref, ("group", "kind", "name"), path)
        name = errors.string(ref, "name", f"{path}.name", required=True, min_len=1, max_len=v.OBJECT_NAME_MAX)
        group = errors.string(ref, "group", f"{path}.group", max_len=v.GROUP_MAX, pattern=v.GROUP_PATTERN)
        kind = errors.string(
            ref, "kind", f"{path}.kind", min_len=1, max_len=v.KIND_MAX, pattern=v.KIND_PATTERN
        )
        if name is not None:
            pool_ref = PoolRef(name, GROUP_X if group is None else group, kind or KIND_POOL)
    if errors or model_name is None or pool_ref is None:
        return None
    criticality = Criticality(crit) if crit is not None else None
    return InferenceModel(api_version, meta, model_name, pool_ref, criticality, targets)


def _target_models(api_version: str, spec: Mapping[str, Any], errors: FieldErrors) -> tuple[TargetModel, ...]:
    items = spec.get("targetModels")
    if items is None:
        return ()
    if not isinstance(items, list):
        errors.add("spec.targetModels", "must be a list")
        return ()
    if len(items) > v.TARGET_MODELS_MAX:
        errors.add("spec.targetModels", f"must have at most {v.TARGET_MODELS_MAX} items")
        return ()
    min_weight = v.WEIGHT_MIN_V1ALPHA1 if api_version == V1ALPHA1 else v.WEIGHT_MIN_V1ALPHA2
    targets: list[TargetModel] = []
    weighted = 0
    for i, item in enumerate(items):
        path = f"spec.targetModels[{i}]"
        if not isinstance(item, Mapping):
            errors.add(path, "must be an object")
            continue
        errors.unknown_fields(item, ("name", "weight"), path)
        name = errors.string(
            item, "name", f"{path}.name", required=True, min_len=1, max_len=v.OBJECT_NAME_MAX
        )
        weight = errors.integer(item, "weight", f"{path}.weight", minimum=min_weight, maximum=v.WEIGHT_MAX)
        weighted += "weight" in item and item["weight"] is not None
        if name is not None:
            targets.append(TargetModel(name, weight))
    if 0 < weighted < len(items):
        errors.add("spec.targetModels", v.MSG_WEIGHTS_ALL_OR_NONE)
    return tuple(targets)


def to_dict(obj: Parsed) -> dict[str, Any]:
    """The Kubernetes form in the object's own apiVersion; parse_object(to_dict(x)) == x."""
    if isinstance(obj, InferenceRollout):
        kind, spec = KIND_ROLLOUT, rollout_spec(obj)
    elif isinstance(obj, InferenceModelRewrite | InferenceObjective):
        kind = KIND_REWRITE if isinstance(obj, InferenceModelRewrite) else "InferenceObjective"
        spec = canary_spec(obj)
    else:
        kind = KIND_MODEL if isinstance(obj, InferenceModel) else KIND_POOL
        spec = _model_spec(obj) if isinstance(obj, InferenceModel) else _pool_spec(obj)
    return {"apiVersion": obj.api_version, "kind": kind, "metadata": _meta_dict(obj), "spec": spec}


def _meta_dict(obj: Parsed) -> dict[str, Any]:
    m = obj.meta
    out: dict[str, Any] = {"name": m.name, "namespace": m.namespace}
    if m.uid:
        out["uid"] = m.uid
    if m.resource_version:
        out["resourceVersion"] = m.resource_version
    if m.generation:
        out["generation"] = m.generation
    if m.creation_timestamp:
        out["creationTimestamp"] = m.creation_timestamp
    if m.labels:
        out["labels"] = dict(m.labels)
    annotations = dict(m.annotations)
    if (
        isinstance(obj, InferencePool)
        and obj.attach_to is not None
        and ANNOTATION_ATTACH_TO not in annotations
    ):
        annotations[ANNOTATION_ATTACH_TO] = render_attach_to(obj.attach_to, m.namespace)
    if annotations:
        out["annotations"] = annotations
    return out


def _pool_spec(pool: InferencePool) -> dict[str, Any]:
    p = pool.picker
    ref: dict[str, Any] = {} if p is None else {"group": p.group, "kind": p.kind, "name": p.name}
    if pool.api_version == V1:
        out: dict[str, Any] = {
            "selector": {"matchLabels": dict(pool.selector)},
            "targetPorts": [{"number": n} for n in pool.target_ports],
            "appProtocol": pool.app_protocol,
        }
        if p is not None:
            out["endpointPickerRef"] = {**ref, "port": {"number": p.port}, "failureMode": str(p.failure_mode)}
        return out
    if p is None or len(pool.target_ports) != 1 or pool.app_protocol != "http":
        raise ValueError(
            f"{pool.api_version} InferencePool needs an endpoint picker, exactly one target port and "
            "appProtocol http"
        )
    ref[_PICKER_PORT_KEYS.get(pool.api_version, _PICKER_PORT_KEYS_DEFAULT)[0]] = p.port
    ref["failureMode"] = str(p.failure_mode)
    return {"selector": dict(pool.selector), "targetPortNumber": pool.target_ports[0], "extensionRef": ref}


def _model_spec(model: InferenceModel) -> dict[str, Any]:
    spec: dict[str, Any] = {"modelName": model.model_name}
    if model.criticality is not None:
        spec["criticality"] = str(model.criticality)
    if model.target_models:
        spec["targetModels"] = [
            {"name": t.name} if t.weight is None else {"name": t.name, "weight": t.weight}
            for t in model.target_models
        ]
    ref = model.pool_ref
    spec["poolRef"] = {"group": ref.group, "kind": ref.kind, "name": ref.name}
    return spec
