"""The picker's protocol handlers, one per gRPC service Envoy talks to: ext_proc (`extproc/`), EDS
(`eds.py`), the access log (`accesslog.py`) and health (`health.py`); `xds.py` holds the request
loop shared by xDS streams (EDS here, the local gateway's ADS). The request lifecycle behind them
is `picker.director`."""
