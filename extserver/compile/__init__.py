"""Pure compilation of InferencePool + InferenceModel into Envoy xDS, shaped for Envoy Gateway's hooks."""

from extserver.compile.backend_ref import patch_cluster, patch_route
from extserver.compile.cache import CompileCache
from extserver.compile.inputs import CompileInputs, CompileOptions, Problem, TranslationOutput
from extserver.compile.plan import Plan, build_plan
from extserver.compile.plan_view import plan_to_dict
from extserver.compile.translate import compile_translation

__all__ = [
    "CompileCache",
    "CompileInputs",
    "CompileOptions",
    "Plan",
    "Problem",
    "TranslationOutput",
    "build_plan",
    "compile_translation",
    "patch_cluster",
    "patch_route",
    "plan_to_dict",
]
