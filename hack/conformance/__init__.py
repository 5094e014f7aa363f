"""The Gateway API Inference Extension conformance suite, run against the real stack (hack/stack).

``python -m hack.conformance`` (``./hack/conformance.sh``) builds the suite, lwepp and echo-basic
(hack/realparts), brings the stack up, runs the suite with ``--gateway-class=inference-gateway``,
writes GIE's report and ends with one line ``conformance: passed=N failed=M skipped=K (...)``.
"""
