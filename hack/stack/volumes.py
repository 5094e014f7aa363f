"""A Pod's volumes as local directories: Secrets, ConfigMaps, projected ServiceAccount tokens, emptyDirs."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from api.sources.kubeapi import KubeApiError, request_json, resource_path

Get = Callable[[str], dict[str, Any]]


def _write(directory: Path, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _pick(data: Mapping[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    return {str(item["path"]): data[str(item["key"])] for item in items if str(item.get("key")) in data}


def _config_map_data(obj: Mapping[str, Any]) -> dict[str, bytes]:
    out = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return out


def _secret_data(obj: Mapping[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}


def _field(pod: Mapping[str, Any], path: str) -> str:
    value: Any = pod
    for part in path.replace("['", ".").replace("']", "").split("."):
        value = (value or {}).get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


class VolumeMaker:
    """Writes each volume of a Pod under `<pod dir>/volumes/<name>` with what the API server holds."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def _get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return request_json(self.api, "GET", resource_path("v1", plural, namespace, name))
        except KubeApiError as err:
            if err.status == 404:
                return None
            raise

    def token(self, pod: Mapping[str, Any], audience: str | None, seconds: int) -> bytes:
        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": max(seconds, 600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        path = resource_path("v1", "serviceaccounts", meta["namespace"], sa, "token")
        answer = request_json(self.api, "POST", path, body=body)
        return str(answer["status"]["token"]).encode()

    def make(self, pod: Mapping[str, Any], root: Path) -> dict[str, Path]:
        """Volume name -> its directory; raises KeyError naming a missing non-optional Secret/ConfigMap."""
        namespace = pod["metadata"]["namespace"]
        out: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            directory = root / "volumes" / str(volume["name"])
            directory.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                self._source(directory, namespace, "secrets", volume["secret"], "secretName", _secret_data)
            elif "configMap" in volume:
                self._source(
                    directory, namespace, "configmaps", volume["configMap"], "name", _config_map_data
                )
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    self._projected(pod, directory, namespace, source)
            out[str(volume["name"])] = directory
        return out

    def _source(
        self,
        directory: Path,
        namespace: str,
        plural: str,
        spec: Mapping[str, Any],
        name_key: str,
        decode: Callable[[Mapping[str, Any]], dict[str, bytes]],
    ) -> None:
        obj = self._get(namespace, plural, str(spec[name_key]))
        if obj is None:
            if spec.get("optional"):
                return
            raise KeyError(f"{plural[:-1]} {namespace}/{spec[name_key]} not found")
        _write(directory, _pick(decode(obj), spec.get("items")))

    def _projected(
        self, pod: Mapping[str, Any], directory: Path, namespace: str, source: Mapping[str, Any]
    ) -> None:
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            token = self.token(pod, spec.get("audience"), int(spec.get("expirationSeconds") or 3600))
            _write(directory, {str(spec["path"]): token})
        elif "configMap" in source:
            self._source(directory, namespace, "configmaps", source["configMap"], "name", _config_map_data)
        elif "secret" in source:
            self._source(directory, namespace, "secrets", source["secret"], "name", _secret_data)
        elif "downwardAPI" in source:
            files = {
                str(item["path"]): _field(pod, str(item["fieldRef"]["fieldPath"])).encode()
                for item in source["downwardAPI"].get("items") or []
                if "fieldRef" in item
            }
            _write(directory, files)
