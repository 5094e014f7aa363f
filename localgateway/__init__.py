"""The local gateway: Envoy Gateway's part played on one machine (`python -m localgateway`); see run.py."""
