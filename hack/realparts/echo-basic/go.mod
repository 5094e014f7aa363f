// Builds Gateway API's echo backend (echo-basic, the conformance suites' model-server stand-in) from the Go
// module proxy. Its module sigs.k8s.io/gateway-api/conformance replaces the root gateway-api module with
// `../`, so `go install ...@v1.6.1` is refused; here the root resolves to its published v1.6.1.
module inference-gateway-extension/hack/realparts/echo-basic

go 1.26.0

require (
	sigs.k8s.io/gateway-api v1.6.1
	sigs.k8s.io/gateway-api/conformance v1.6.1
)
