"""A vLLM-shaped model-server simulator for gateway tests, demos and benchmarks (a dev tool, not shipped).

Each server speaks vLLM's OpenAI API (`/v1/completions`, `/v1/chat/completions` with SSE,
`/v1/models`, `/health`, `/metrics` with vLLM 0.32 names) over a continuous-batching engine:
`max_num_seqs` running sequences, a FIFO waiting queue, a KV-cache budget in tokens, a block-hashed
prefix cache, `max_loras` adapter slots with a load cost. Latency constants come from the H100
measurements in docs/model-server-latency.md (decode step ms ~= 6.0 + 0.009 x running + 0.042 x
KV k-tokens held; prefill ms ~= 5 + 0.0225 x uncached prompt tokens); `time_scale` shrinks every
delay (0.1 = 10x faster than real time). Tokens are counted as UTF-8 bytes / 4. Tests drive
servers at runtime via `POST /sim/control` or the Python methods on SimServer, and read traffic
from `GET /sim/stats`. Every answer carries `x-sim-server: <name or host:port>`. TTFT in /metrics
is wall-clock (scaled) time. One model (base or adapter) can be degraded: TTFT x N, token latency
x N, a share of 500s, from a given moment (`degrade` in /sim/control, `--degrade`, the env
`SIM_DEGRADE` of a pod manifest; docs/simulator.md).

    python -m simulator --host 127.0.0.2 --port 8000 --served-model-name llama2-7b \
        --lora-modules sql-lora=/x tweet-summary=/y --max-loras 4 --time-scale 0.1
    python -m simulator --served-model-name base --lora-modules canary=/c \
        --degrade model=canary,ttft=3,after_s=30
    python -m simulator fleet --config fleet.yaml [--admin 127.0.0.1:9100]

    async with SimFleet([SimServerConfig(host="127.0.0.2", port=8000, served_model_name="qwq-32b")]) as fleet:
        fleet.servers[0].set_slowdown(5.0)
"""

from simulator.config import FleetConfig, SimServerConfig, load_fleet_config, parse_lora_modules
from simulator.degradation import Degradation, parse_degradations
from simulator.engine import Engine, EngineConfig
from simulator.fleet import SimFleet
from simulator.server import SERVER_HEADER, SimServer

__all__ = [
    "SERVER_HEADER",
    "Degradation",
    "Engine",
    "EngineConfig",
    "FleetConfig",
    "SimFleet",
    "SimServer",
    "SimServerConfig",
    "load_fleet_config",
    "parse_degradations",
    "parse_lora_modules",
]
