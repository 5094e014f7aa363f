"""Built-in-kind manifests under config/ pass kubernetes-validate; the EG config lists served versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from api.parse import owns
from api.yamlio import load_documents

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30.0"
# Groups of custom kinds kubernetes-validate has no schema for (ours are checked by test_api_crd.py).
CUSTOM_GROUPS = (
    "inference.networking.x-k8s.io",
    "inference.networking.k8s.io",
    "gateway.networking.k8s.io",
    "gateway.networking.x-k8s.io",
    "gateway.envoyproxy.io",
    "llm-d.ai",
    "extension.inference-gateway.io",
)


def _documents() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for path in sorted((ROOT / "config").rglob("*.yaml")):
        for index, doc in enumerate(load_documents(path)):
            out.append((str(path.relative_to(ROOT)), index, doc))
    return out


DOCUMENTS = _documents()


def _group(doc: dict[str, Any]) -> str:
    api_version = str(doc.get("apiVersion", ""))
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


@pytest.mark.parametrize(
    "doc", [d for _, _, d in DOCUMENTS], ids=[f"{p}#{i}:{d.get('kind')}" for p, i, d in DOCUMENTS]
)
def test_built_in_kinds_pass_kubernetes_validate(doc: dict[str, Any]) -> None:
    if _group(doc) in CUSTOM_GROUPS:
        assert not doc["kind"].startswith("Inference") or owns(doc), (
            "an inference kind this project does not serve"
        )
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except SchemaNotFoundError:
        pytest.fail(f"kubernetes-validate has no schema for {doc.get('apiVersion')} {doc.get('kind')}")


def test_crd_manifests_are_checked() -> None:
    crds = [d for _, _, d in DOCUMENTS if d.get("kind") == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} >= {
        "inferencepools.inference.networking.x-k8s.io",
        "inferencemodels.inference.networking.x-k8s.io",
        "inferencepools.inference.networking.k8s.io",
    }


def _served() -> set[tuple[str, str, str]]:
    served = set()
    for _, _, doc in DOCUMENTS:
        if doc.get("kind") == "CustomResourceDefinition":
            spec = doc["spec"]
            for version in spec["versions"]:
                if version["served"]:
                    served.add((spec["group"], version["name"], spec["names"]["kind"]))
    return served


def test_every_inference_kind_the_envoy_gateway_config_lists_is_served() -> None:
    import yaml

    listed: list[dict[str, Any]] = []
    for _, _, doc in DOCUMENTS:
        if doc.get("kind") != "ConfigMap":
            continue
        for text in doc.get("data", {}).values():
            config = yaml.safe_load(text)
            if isinstance(config, dict) and config.get("kind") == "EnvoyGateway":
                manager = config.get("extensionManager") or {}
                for key in ("resources", "policyResources", "backendResources"):
                    listed.extend(manager.get(key) or [])
    served = _served()
    for gvk in listed:
        if gvk["group"].startswith("inference.networking."):
            assert (gvk["group"], gvk["version"], gvk["kind"]) in served, gvk
