"""The generated CRDs and api/parse.py agree: same objects accepted, same invalid ones rejected."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from api.errors import ValidationError
from api.parse import describe, owns, parse_object
from api.yamlio import load_documents

# cel-python's package does not re-export these names explicitly.
json_to_cel: Any = celpy.json_to_cel  # type: ignore[attr-defined]
CELEvalError: Any = celpy.CELEvalError  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = Path(__file__).parent / "data" / "crd_cases"
CRD_DIR = ROOT / "config" / "crd"
SAMPLES = sorted((ROOT / "config" / "samples").glob("*.yaml"))

# --- the CRD side: OpenAPI part with jsonschema, CEL part with cel-python, after structural defaulting


def load_crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, read from the generated config/crd files."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in load_documents(path):
            spec = crd["spec"]
            for version in spec["versions"]:
                api_version = f"{spec['group']}/{version['name']}"
                out[(api_version, spec["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return out


def to_json_schema(schema: Any) -> Any:
    """Drop the Kubernetes-only keys; the rest of a structural schema is valid JSON Schema."""
    if isinstance(schema, dict):
        return {k: to_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [to_json_schema(v) for v in schema]
    return schema


def apply_defaults(schema: dict[str, Any], value: Any) -> None:
    """Structural defaulting as the API server does it before validation (in place)."""
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                apply_defaults(extra, item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(schema["items"], item)


def cel_errors(
    schema: dict[str, Any], value: Any, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, message) for each failing x-kubernetes-validations rule; transition rules are skipped."""
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        program = env.program(env.compile(rule["rule"]))
        try:
            ok = bool(program.evaluate({"self": json_to_cel(value)}))
        except CELEvalError:
            ok = False
        if not ok:
            yield path, rule["message"]
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from cel_errors(sub, value[name], (*path, name))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from cel_errors(schema["items"], item, (*path, str(i)))


def crd_errors(
    schemas: dict[tuple[str, str], dict[str, Any]], obj: dict[str, Any]
) -> list[tuple[tuple[str, ...], str]]:
    """What the API server would reject `obj` for, as (path tokens, message)."""
    schema = schemas[(obj["apiVersion"], obj["kind"])]
    obj = copy.deepcopy(obj)
    apply_defaults(schema, obj)
    errors: list[tuple[tuple[str, ...], str]] = []
    for error in jsonschema.Draft7Validator(to_json_schema(schema)).iter_errors(obj):
        path = tuple(str(p) for p in error.absolute_path)
        if error.validator == "required":
            missing = re.match(r"'(.+)' is a required property", error.message)
            path = (*path, missing.group(1)) if missing else path
        errors.append((path, error.message))
    if not errors:
        errors.extend(cel_errors(schema, obj, ()))
    return errors


# --- the cases as data


@dataclass
class Case:
    file: str
    name: str
    base: dict[str, Any]
    set: dict[str, Any] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    error: str | None = None
    crd: bool = True

    @property
    def id(self) -> str:
        return f"{self.file}: {self.name}"

    def object(self) -> dict[str, Any]:
        obj = copy.deepcopy(self.base)
        for path, value in self.set.items():
            *parents, last = path_tokens(path)
            _walk(obj, parents)[last] = copy.deepcopy(value)
        for path in self.delete:
            *parents, last = path_tokens(path)
            del _walk(obj, parents)[last]
        return obj


_TOKEN = re.compile(r'\.?([^.\[\]"]+)|\[(\d+)\]|\["([^"]+)"\]')


def path_tokens(path: str) -> list[Any]:
    """`spec.targetModels[1].weight` -> ["spec", "targetModels", 1, "weight"]; `a["x.y/z"]` for odd keys."""
    tokens: list[Any] = []
    for name, index, key in _TOKEN.findall(path):
        tokens.append(int(index) if index else (key or name))
    return tokens


def _walk(obj: Any, tokens: list[Any]) -> Any:
    for token in tokens:
        obj = obj[token]
    return obj


def error_path_tokens(message: str) -> tuple[str, ...]:
    """The field path of a parser error `<path>: <message>`, as tokens comparable with crd_errors'."""
    path = message.split(": ", 1)[0]
    return tuple(str(t) for t in path_tokens(re.sub(r"\[([^\]\d][^\]]*)\]", r'["\1"]', path)))


def load_cases() -> tuple[list[Case], list[Case]]:
    valid: list[Case] = [Case("seed", "base", {})] * 0
    invalid: list[Case] = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        base = data["base"]
        valid.append(Case(path.name, "base", base))
        for entry in data.get("valid", []):
            valid.append(Case(path.name, entry["name"], base, entry.get("set", {}), entry.get("delete", [])))
        for entry in data.get("invalid", []):
            invalid.append(
                Case(
                    path.name,
                    entry["name"],
                    base,
                    entry.get("set", {}),
                    entry.get("delete", []),
                    entry["error"],
                    entry.get("crd", True),
                )
            )
    return valid, invalid


VALID_CASES, INVALID_CASES = load_cases()


@pytest.fixture(scope="module")
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return load_crd_schemas()


def test_generated_crds_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen_crds.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_owned_version_has_a_served_schema(schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    from api.model import MODEL_API_VERSIONS, POOL_API_VERSIONS
    from api.rewrite import CANARY_API_VERSIONS
    from api.rollout import KIND_ROLLOUT, ROLLOUT_API_VERSION

    expected = (
        {(v, "InferencePool") for v in POOL_API_VERSIONS}
        | {(v, "InferenceModel") for v in MODEL_API_VERSIONS}
        | {(v, k) for v in CANARY_API_VERSIONS for k in ("InferenceModelRewrite", "InferenceObjective")}
        | {(ROLLOUT_API_VERSION, KIND_ROLLOUT)}
    )
    assert set(schemas) == expected


def test_exactly_one_storage_version_per_crd() -> None:
    for path in CRD_DIR.glob("*.yaml"):
        (crd,) = load_documents(path)
        versions = crd["spec"]["versions"]
        assert sum(v["storage"] for v in versions) == 1, path.name
        assert all(v["served"] and v["subresources"] == {"status": {}} for v in versions), path.name


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_crds_accept_sample_objects(sample: Path, schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    owned = [doc for doc in load_documents(sample) if owns(doc)]
    # A pool and what routes in it, at least; or a rollout alone (it moves another sample's objects).
    assert len(owned) >= 2 or [doc["kind"] for doc in owned] == ["InferenceRollout"]
    for doc in owned:
        assert crd_errors(schemas, doc) == [], describe(doc)
        parse_object(doc)


@pytest.mark.parametrize("case", VALID_CASES, ids=lambda c: c.id)
def test_valid_case_accepted_by_both(case: Case, schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    obj = case.object()
    parse_object(obj)
    assert crd_errors(schemas, obj) == []


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_invalid_case_rejected_with_its_path(
    case: Case, schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    obj = case.object()
    with pytest.raises(ValidationError) as caught:
        parse_object(obj)
    assert caught.value.errors == [f"{describe(obj)}: {case.error}"]
    assert case.error is not None
    if case.crd:
        errors = crd_errors(schemas, obj)
        assert errors, "the CRD schema accepts an object api/parse.py rejects"
        assert error_path_tokens(case.error) in {path for path, _ in errors}, errors


def test_crds_reject_at_least_ten_distinct_invalid_objects() -> None:
    assert len([c for c in INVALID_CASES if c.crd]) >= 10


def test_cel_rules_reject_what_they_should(schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    cel_rejected = set()
    for case in INVALID_CASES:
        if case.crd:
            messages = {message for _, message in crd_errors(schemas, case.object())}
            cel_rejected |= messages & {
                "weights must be set on all targetModels or on none",
                "port numbers must be unique",
                "port is required when kind is 'Service' or unspecified (defaults to 'Service')",
            }
    assert len(cel_rejected) == 3


def test_path_tokens() -> None:
    assert path_tokens("spec.targetModels[1].weight") == ["spec", "targetModels", 1, "weight"]
    assert path_tokens('metadata.annotations["a.b/c"]') == ["metadata", "annotations", "a.b/c"]
    assert error_path_tokens("spec.selector[app.x/y]: bad") == ("spec", "selector", "app.x/y")
