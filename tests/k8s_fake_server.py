"""A local HTTP server speaking the Kubernetes list/watch protocol, for testing the Kubernetes source.

No kube-apiserver can run on this machine, so this fake implements the parts of the real wire
protocol the source uses: paged lists with a collection resourceVersion, chunked watch streams of
JSON lines (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR), 410 Gone for expired resourceVersions (as an
ERROR event or as an HTTP status), 404 for kinds not served, GET of one object and merge-patch of
the status subresource with a resourceVersion precondition. Tests drive it from their own thread.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes.client import ApiClient, Configuration

Resource = tuple[str, str]  # (apiVersion, plural)


def plural_of(kind: str) -> str:
    return kind.lower() + "s"


@dataclass
class _Event:
    rv: int
    type: str
    obj: dict[str, Any]


@dataclass
class _Collection:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[_Event] = field(default_factory=list)
    expired_below: int = 0  # watches from a resourceVersion below this get 410 Gone


class FakeKubeApi:
    """The fake API server. Only `serve()`d resources exist; others answer 404 (CRD not installed)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rv = 1000
        self._collections: dict[Resource, _Collection] = {}
        self._drop_generation = 0
        self._held = False
        self._stopping = False
        self.http_410 = False  # answer expired watches with HTTP 410 instead of an ERROR event
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.delivered: dict[Resource, int] = {}  # highest event resourceVersion written to a watch
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-kube-api", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def api_client(self) -> ApiClient:
        assert self._server is not None
        config = Configuration(host=f"http://127.0.0.1:{self._server.server_address[1]}")
        return ApiClient(config)

    # --- state changes (test side) -----------------------------------------------------------

    def serve(self, api_version: str, plural: str) -> None:
        with self._cond:
            self._collections.setdefault((api_version, plural), _Collection())

    def put(
        self, obj: Mapping[str, Any], plural: str | None = None, record_event: bool = True
    ) -> dict[str, Any]:
        """Create or update an object (ADDED or MODIFIED event); returns it as stored."""
        obj = copy.deepcopy(dict(obj))
        resource = (obj["apiVersion"], plural or plural_of(obj["kind"]))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        with self._cond:
            coll = self._collections[resource]
            key = (meta["namespace"], meta["name"])
            old = coll.objects.get(key)
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            meta.setdefault("uid", f"uid-{meta['namespace']}-{meta['name']}")
            meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else _now())
            meta["generation"] = (old["metadata"].get("generation", 1) + 1) if old else 1
            coll.objects[key] = obj
            if record_event:
                coll.events.append(_Event(self._rv, "MODIFIED" if old else "ADDED", copy.deepcopy(obj)))
            self._cond.notify_all()
        return copy.deepcopy(obj)

    def remove(
        self, api_version: str, plural: str, namespace: str, name: str, record_event: bool = True
    ) -> None:
        with self._cond:
            coll = self._collections[(api_version, plural)]
            obj = coll.objects.pop((namespace, name))
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            if record_event:
                coll.events.append(_Event(self._rv, "DELETED", obj))
            self._cond.notify_all()

    def expire_history(self, api_version: str, plural: str) -> None:
        """Compact: watches resuming from any resourceVersion seen so far get 410 Gone."""
        with self._cond:
            self._rv += 1
            coll = self._collections[(api_version, plural)]
            coll.expired_below = self._rv
            coll.events.clear()

    def bookmark(self, api_version: str, plural: str) -> int:
        """Send a BOOKMARK on open watches of a resource; returns its resourceVersion."""
        with self._cond:
            self._rv += 1
            obj = {
                "apiVersion": api_version,
                "kind": "Bookmark",
                "metadata": {"resourceVersion": str(self._rv)},
            }
            self._collections[(api_version, plural)].events.append(_Event(self._rv, "BOOKMARK", obj))
            self._cond.notify_all()
            return self._rv

    def drop_watches(self) -> None:
        """Break every open watch connection abruptly (no final chunk), like a dying API server."""
        with self._cond:
            self._drop_generation += 1
            self._cond.notify_all()

    @contextmanager
    def holding_events(self) -> Iterator[None]:
        """Delay delivery of watch events (the watch lags) until the block ends."""
        with self._cond:
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._collections[(api_version, plural)].objects[(namespace, name)])

    def count(self, method: str, path: str, watch: bool | None = None) -> int:
        """How many requests for `path` were made (watch True/False narrows to watches or lists)."""
        with self._cond:
            return sum(
                1
                for m, p, q in self.requests
                if m == method and p == path and (watch is None or (q.get("watch") == "true") == watch)
            )

    # --- request handling (server threads) -----------------------------------------------------

    def _lookup(self, path: str) -> tuple[Resource, str | None, str | None, str | None] | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            api_version, rest = parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        resource = (api_version, rest[0])
        with self._cond:
            if resource not in self._collections:
                return None
        return resource, namespace, name, sub

    def _list(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        with self._cond:
            coll = self._collections[resource]
            items = [
                copy.deepcopy(o)
                for (ns, _), o in sorted(coll.objects.items())
                if namespace is None or ns == namespace
            ]
            rv = self._rv
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items) or 1
        page = items[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        # Real list items of built-in kinds carry no apiVersion/kind; mimic that for the core group.
        if "/" not in resource[0]:
            for item in page:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return {"apiVersion": resource[0], "kind": "List", "metadata": meta, "items": page}

    def _watch(
        self, handler: _Handler, resource: Resource, namespace: str | None, query: dict[str, str]
    ) -> None:
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        with self._cond:
            coll = self._collections[resource]
            expired = since < coll.expired_below
            generation = self._drop_generation
        if expired and self.http_410:
            handler.send_json(410, _status(410, "Expired", "too old resource version"))
            return
        handler.start_chunked()
        if expired:
            handler.write_chunk(
                {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}
            )
            handler.end_chunked()
            return
        cursor = since
        while True:
            with self._cond:
                while True:
                    if self._stopping or self._drop_generation != generation:
                        handler.abort()
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    pending = [] if self._held else [e for e in coll.events if e.rv > cursor]
                    if pending:
                        break
                    self._cond.wait(remaining)
            if remaining <= 0:
                handler.end_chunked()
                return
            for event in pending:
                cursor = event.rv
                if (
                    namespace is not None
                    and event.type != "BOOKMARK"
                    and event.obj["metadata"].get("namespace") != namespace
                ):
                    continue
                handler.write_chunk({"type": event.type, "object": event.obj})
                with self._cond:
                    self.delivered[resource] = max(self.delivered.get(resource, 0), event.rv)

    def _patch_status(
        self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> tuple[int, Any]:
        with self._cond:
            coll = self._collections[resource]
            obj = coll.objects.get((namespace, name))
            if obj is None:
                return 404, _status(404, "NotFound", f"{name} not found")
            wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != obj["metadata"]["resourceVersion"]:
                return 409, _status(409, "Conflict", "the object has been modified")
            obj["status"] = _merge(obj.get("status") or {}, patch.get("status") or {})
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            coll.events.append(_Event(self._rv, "MODIFIED", copy.deepcopy(obj)))
            self._cond.notify_all()
            return 200, copy.deepcopy(obj)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _route(
        self,
    ) -> tuple[tuple[Resource, str | None, str | None, str | None] | None, dict[str, str], str]:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self.fake._cond:
            self.fake.requests.append((self.command, url.path, query))
        return self.fake._lookup(url.path), query, url.path

    def do_GET(self) -> None:
        found, query, path = self._route()
        if found is None:
            self.send_json(
                404, _status(404, "NotFound", f"the server could not find the requested resource {path}")
            )
            return
        resource, namespace, name, _sub = found
        if name is not None:
            try:
                obj = self.fake.get(resource[0], resource[1], namespace or "", name)
            except KeyError:
                self.send_json(404, _status(404, "NotFound", f"{name} not found"))
                return
            self.send_json(200, obj)
        elif query.get("watch") == "true":
            self.fake._watch(self, resource, namespace, query)
        else:
            self.send_json(200, self.fake._list(resource, namespace, query))

    def do_PATCH(self) -> None:
        found, _query, _path = self._route()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if found is None or found[2] is None or found[3] != "status" or found[1] is None:
            self.send_json(404, _status(404, "NotFound", "not found"))
            return
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            self.send_json(415, _status(415, "UnsupportedMediaType", "merge patch only"))
            return
        code, answer = self.fake._patch_status(found[0], found[1], found[2], body)
        self.send_json(code, answer)

    def send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, event: Mapping[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def abort(self) -> None:
        """Close the socket mid-stream: the client sees a broken chunked response."""
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


_clock_lock = threading.Lock()
_clock = [0]


def _now() -> str:
    """Distinct, increasing creation timestamps (one second apart) so oldest-wins is deterministic."""
    with _clock_lock:
        _clock[0] += 1
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + _clock[0]))


# --- manifest builders shared by the source tests ------------------------------------------------


def pool_v1alpha2(
    name: str,
    selector: Mapping[str, str],
    namespace: str = "default",
    port: int = 8000,
    picker: str = "picker",
    created: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
        "kind": "InferencePool",
        "metadata": meta,
        "spec": {"selector": dict(selector), "targetPortNumber": port, "extensionRef": {"name": picker}},
    }


def model_v1alpha2(
    name: str,
    model_name: str,
    pool: str,
    namespace: str = "default",
    created: str | None = None,
    targets: tuple[tuple[str, int], ...] = (),
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    spec: dict[str, Any] = {"modelName": model_name, "poolRef": {"name": pool}}
    if targets:
        spec["targetModels"] = [{"name": n, "weight": w} for n, w in targets]
    return {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
        "kind": "InferenceModel",
        "metadata": meta,
        "spec": spec,
    }


def pod(
    name: str,
    labels: Mapping[str, str],
    ip: str = "10.0.0.1",
    namespace: str = "default",
    ready: bool = True,
    terminating: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if terminating:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "vllm", "ports": [{"containerPort": 8000}]}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
