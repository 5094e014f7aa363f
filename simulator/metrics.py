"""The /metrics exposition of a simulated server: vLLM 0.32's names, labels and text layout.

Rendered by hand (a few string joins per scrape) because fleets are scraped every 50 ms per server;
the layout is what prometheus_client writes for vLLM (counters with `_total` and `_created`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from simulator.engine import TTFT_BUCKETS, EngineCounters, EngineSnapshot

LORA_SERIES_KEPT = 64  # vLLM never drops old lora_requests_info series; cap them so memory stays bounded


@dataclass(frozen=True)
class MetricsView:
    """The values /metrics shows: the engine's own, or those a test forced through /sim/control."""

    running: int
    waiting: int
    waiting_deferred: int
    kv_cache_usage: float
    running_lora_adapters: tuple[str, ...]
    waiting_lora_adapters: tuple[str, ...]


def view_of(snapshot: EngineSnapshot) -> MetricsView:
    return MetricsView(
        running=snapshot.running,
        waiting=snapshot.waiting,
        waiting_deferred=snapshot.waiting_deferred,
        kv_cache_usage=snapshot.kv_cache_usage,
        running_lora_adapters=snapshot.running_lora_adapters,
        waiting_lora_adapters=snapshot.waiting_lora_adapters,
    )


class LoraInfoSeries:
    """`vllm:lora_requests_info` series: one per adapter-set combination, value = when it was last seen."""

    def __init__(self) -> None:
        self._series: OrderedDict[tuple[str, str], float] = OrderedDict()

    def observe(self, running: tuple[str, ...], waiting: tuple[str, ...], now: float) -> None:
        key = (",".join(running), ",".join(waiting))
        self._series[key] = now
        self._series.move_to_end(key)
        while len(self._series) > LORA_SERIES_KEPT:
            self._series.popitem(last=False)

    def items(self) -> list[tuple[tuple[str, str], float]]:
        return list(self._series.items())

    def clear(self) -> None:
        self._series.clear()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value))


class MetricsRenderer:
    """Renders one server's exposition; label strings and static families are built once."""

    def __init__(
        self,
        model_name: str,
        block_size: int,
        kv_cache_tokens: int,
        max_loras: int,
        lora_enabled: bool,
        created: float,
    ) -> None:
        self._labels = f'engine="0",model_name="{_escape(model_name)}"'
        self._created = _num(created)
        self._max_lora = str(max_loras)
        self._lora_enabled = lora_enabled
        self._model_name = _escape(model_name)
        num_blocks = kv_cache_tokens // block_size
        cache_labels = {
            "block_size": str(block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "engine": "0",
            "gpu_memory_utilization": "0.9",
            "is_attention_free": "False",
            "kv_cache_size_tokens": str(kv_cache_tokens),
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(num_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_caching_hash_algo": "xxhash",
            "sliding_window": "None",
        }
        labels = ",".join(f'{k}="{v}"' for k, v in cache_labels.items())
        self._cache_config = (
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
            "# TYPE vllm:cache_config_info gauge\n"
            f"vllm:cache_config_info{{{labels}}} 1.0\n"
        )

    def _gauge(self, out: list[str], name: str, help_text: str, value: float) -> None:
        out.append(
            f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{name}{{{self._labels}}} {_num(value)}\n"
        )

    def _counter(self, out: list[str], name: str, help_text: str, series: list[tuple[str, float]]) -> None:
        """series: (extra labels like 'finished_reason="length",' or '', value)."""
        lines = [f"# HELP {name}_total {help_text}\n# TYPE {name}_total counter\n"]
        lines += [f"{name}_total{{{self._lab(extra)}}} {_num(v)}\n" for extra, v in series]
        lines.append(f"# HELP {name}_created {help_text}\n# TYPE {name}_created gauge\n")
        lines += [f"{name}_created{{{self._lab(extra)}}} {self._created}\n" for extra, _ in series]
        out.append("".join(lines))

    def _lab(self, extra: str) -> str:
        return f"{self._labels},{extra}" if extra else self._labels

    def render(self, view: MetricsView, counters: EngineCounters, lora_series: LoraInfoSeries) -> str:
        out: list[str] = []
        self._gauge(
            out, "vllm:num_requests_running", "Number of requests in model execution batches.", view.running
        )
        self._gauge(
            out, "vllm:num_requests_waiting", "Number of requests waiting to be processed.", view.waiting
        )
        deferred = min(view.waiting_deferred, view.waiting)
        out.append(
            "# HELP vllm:num_requests_waiting_by_reason Number of waiting requests by reason.\n"
            "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
            f'vllm:num_requests_waiting_by_reason{{{self._labels},reason="capacity"}} '
            f"{_num(view.waiting - deferred)}\n"
            f'vllm:num_requests_waiting_by_reason{{{self._labels},reason="deferred"}} {_num(deferred)}\n'
        )
        self._gauge(
            out, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", view.kv_cache_usage
        )
        self._counter(
            out,
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            [("", counters.prefix_queries)],
        )
        self._counter(
            out,
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            [("", counters.prefix_hits)],
        )
        self._counter(
            out, "vllm:prompt_tokens", "Number of prefill tokens processed.", [("", counters.prompt_tokens)]
        )
        self._counter(
            out,
            "vllm:prompt_tokens_cached",
            "Number of cached prompt tokens (local + external).",
            [("", counters.prompt_tokens_cached)],
        )
        self._counter(
            out,
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            [("", counters.generation_tokens)],
        )
        self._counter(
            out,
            "vllm:request_success",
            "Count of successfully processed requests.",
            [(f'finished_reason="{r}"', float(n)) for r, n in counters.success_by_reason.items()],
        )
        self._render_ttft(out, counters)
        if self._lora_enabled:
            out.append(
                "# HELP vllm:lora_requests_info Running stats on lora requests.\n"
                "# TYPE vllm:lora_requests_info gauge\n"
            )
            out += [
                f'vllm:lora_requests_info{{max_lora="{self._max_lora}",running_lora_adapters="{_escape(r)}",'
                f'waiting_lora_adapters="{_escape(w)}"}} {_num(ts)}\n'
                for (r, w), ts in lora_series.items()
            ]
        out.append(self._cache_config)
        return "".join(out)

    def _render_ttft(self, out: list[str], counters: EngineCounters) -> None:
        name = "vllm:time_to_first_token_seconds"
        help_line = "Histogram of time to first token in seconds."
        lines = [f"# HELP {name} {help_line}\n# TYPE {name} histogram\n"]
        # EngineCounters stores the buckets cumulatively, as the exposition wants them.
        for bound, count in zip(TTFT_BUCKETS, counters.ttft_buckets, strict=True):
            lines.append(
                f'{name}_bucket{{engine="0",le="{bound}",model_name="{self._model_name}"}} {_num(count)}\n'
            )
        lines.append(
            f'{name}_bucket{{engine="0",le="+Inf",model_name="{self._model_name}"}} '
            f"{_num(counters.ttft_count)}\n"
        )
        lines.append(f"{name}_count{{{self._labels}}} {_num(counters.ttft_count)}\n")
        lines.append(f"{name}_sum{{{self._labels}}} {_num(counters.ttft_sum)}\n")
        lines.append(
            f"# HELP {name}_created {help_line}\n# TYPE {name}_created gauge\n"
            f"{name}_created{{{self._labels}}} {self._created}\n"
        )
        out.append("".join(lines))
