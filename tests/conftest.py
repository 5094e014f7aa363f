"""Shared pytest options and fixtures."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    # Golden tests (tests/test_compile_golden.py): rewrite tests/golden/out/ and delete orphans.
    parser.addoption("--update-golden", action="store_true", default=False, help="rewrite golden outputs")


# Real-vLLM tests (marker `vllm`, tests/test_vllm_real.py) take minutes: they are deselected (reported
# as such, never counted as passed) unless CI or E2E_VLLM is set, or `-m` names the marker.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    if os.environ.get("CI") or os.environ.get("E2E_VLLM") or "vllm" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("vllm") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("vllm") is None]


@pytest.fixture(scope="session")
def real_stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real stack (./hack/stack.sh up) shared by every test module that asks for it."""
    from tests.stack_support import RealStack

    stack = RealStack(tmp_path_factory.mktemp("stack")).up()
    try:
        yield stack
    finally:
        stack.down()
