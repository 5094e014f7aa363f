// Builds the Gateway API Inference Extension conformance suite (a `go test -c` binary) from the Go module
// proxy. Its module replaces the root module with `../`, which only works inside GIE's repository; here
// the root resolves to its published v1.6.0, and the suite's own storage pin is carried over.
module inference-gateway-extension/hack/realparts/conformance

go 1.26.0

replace cloud.google.com/go/storage => cloud.google.com/go/storage v1.59.2

require (
	sigs.k8s.io/gateway-api-inference-extension v1.6.0
	sigs.k8s.io/gateway-api-inference-extension/conformance v1.6.0
)
