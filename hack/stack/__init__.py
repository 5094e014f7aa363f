"""The real control plane on this machine (./hack/stack.sh): see hack/stack/__main__.py."""
