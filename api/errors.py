"""Errors raised when an InferencePool/InferenceModel (or one of its annotations) is invalid."""

from __future__ import annotations


class ValidationError(ValueError):
    """Every problem found in one object, each as `<Kind> <ns>/<name>: <field path>: <message>`."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)
