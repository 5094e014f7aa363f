// Builds GIE's lightweight round-robin endpoint picker (lwepp, the EPP the conformance suite deploys) from the
// Go module proxy. `go install ...@v1.6.0` would read the module's version list for deprecations, which the
// proxy here refuses (403); inside this module the exact version is all it needs.
module inference-gateway-extension/hack/realparts/lwepp

go 1.26.0

require sigs.k8s.io/gateway-api-inference-extension v1.6.0
