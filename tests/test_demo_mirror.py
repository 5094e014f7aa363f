"""`./hack/demo.sh mirror --stand-in` as a new user runs it: production and shadow side by side."""

from __future__ import annotations

import re

import pytest

from localgateway import demo

pytestmark = pytest.mark.e2e


async def test_the_mirror_demo_prints_production_and_shadow(capsys: pytest.CaptureFixture[str]) -> None:
    assert await demo.run("mirror", 60, keep=False) == 0
    out = capsys.readouterr().out
    found = re.search(r"^mirror: production=(\d+) shadow=(\d+) ", out, re.MULTILINE)
    assert found, out
    production, shadow = int(found[1]), int(found[2])
    assert production == 60 and 0 < shadow < 60  # the demo's own readiness probe is not counted
    assert re.search(r"^  shadow +shadow-pool +\d+  llama-3-8b-candidate=\d+$", out, re.MULTILINE), out
    assert "client answers by model: llama-3-8b=60 " in out
