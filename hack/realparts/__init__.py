"""The real control plane, built from the Go module proxy at pinned versions and cached per user.

``python -m hack.realparts [NAME...]`` builds what is missing and prints where each binary is.
Versions and the reasons for them: docs/real-stack.md.
"""

from hack.realparts.build import (
    GIE_VERSION,
    PARTS,
    STACK_PARTS,
    Part,
    binary,
    eg_crd_files,
    gie_crd_files,
    go_available,
    stack_version_line,
)

__all__ = [
    "GIE_VERSION",
    "PARTS",
    "STACK_PARTS",
    "Part",
    "binary",
    "eg_crd_files",
    "gie_crd_files",
    "go_available",
    "stack_version_line",
]
