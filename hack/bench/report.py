"""Render routing-benchmark results (the JSON routing.py writes) as docs/benchmarks.md with PNG plots.

.venv/bin/python hack/bench/report.py docs/img/routing-results.json   # re-render without re-running
"""

# ruff: noqa: E501  (long Markdown prose and table rows read better unbroken)
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROUTER_ORDER = ("picker", "round_robin", "least_request", "random", "vllm-router", "sglang-router")


def _fmt(value: float, digits: int = 0) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"
    )


def _routers(cells: Sequence[dict[str, Any]]) -> list[str]:
    seen = {c["router"] for c in cells}
    return [r for r in ROUTER_ORDER if r in seen] + sorted(seen - set(ROUTER_ORDER))


def best_other(
    cells: Sequence[dict[str, Any]], key: str, lower_is_better: bool = True
) -> tuple[str, float] | None:
    """The best non-picker router (failing at most 1% of requests) of one workload and load by `key`."""
    others = [
        (c["router"], c["summary"][key])
        for c in cells
        if c["router"] != "picker"
        and c["summary"]
        and not math.isnan(c["summary"][key])
        and c["summary"]["error_rate"] + c["summary"]["shed_rate"] <= 0.01
    ]
    if not others:
        return None
    return (min if lower_is_better else max)(others, key=lambda x: x[1])


def picker_vs_best_other(
    cells: Sequence[dict[str, Any]], key: str, lower_is_better: bool = True
) -> tuple[float, str] | None:
    """(picker's `key` / the best other router's, that router) for one workload and load."""
    picker = next((c for c in cells if c["router"] == "picker" and c["summary"]), None)
    best = best_other(cells, key, lower_is_better)
    if picker is None or best is None:
        return None
    return picker["summary"][key] / best[1], best[0]


def top_load_vs_best_other(document: dict[str, Any], workload: str) -> str:
    """`<ratio> (vs <router>)`: picker / best other p90 TTFT of a workload at its highest load."""
    for wl in document["workloads"]:
        if wl["workload"] != workload or not wl["cells"]:
            continue
        top = max(c["load"] for c in wl["cells"])
        found = picker_vs_best_other([c for c in wl["cells"] if c["load"] == top], "ttft_p90_ms")
        return "n/a" if found is None else f"{_fmt(found[0], 2)} (vs {found[1]})"
    return "n/a"


def workload_table(wl: dict[str, Any]) -> list[str]:
    lines = []
    loads = sorted({c["load"] for c in wl["cells"]})
    for load in loads:
        cells = [c for c in wl["cells"] if c["load"] == load]
        rate = cells[0]["rate"] if cells else 0.0
        lines.append(
            f"**{load:.0%} load** ({rate:.1f} req/s offered, {cells[0]['summary']['requests']} requests measured)"
        )
        lines.append("")
        lines.append(
            "| router | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | e2e p90 ms | tokens/s | req/s | errors | shed "
            "| prefix hits | LoRA loads | busiest server | server TTFT mean ms | valid |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        by_router = {c["router"]: c for c in cells}
        for router in _routers(cells):
            c = by_router[router]
            s = c["summary"]
            f = c.get("fleet", {})
            name = f"**{router}**" if router == "picker" else router
            lines.append(
                f"| {name} | {_fmt(s['ttft_p50_ms'])} | {_fmt(s['ttft_p90_ms'])} | {_fmt(s['ttft_p99_ms'])} "
                f"| {_fmt(s['e2e_p90_ms'])} | {_fmt(s['tokens_per_s'])} | {_fmt(s['requests_per_s'], 1)} "
                f"| {s['error_rate']:.1%} | {s['shed_rate']:.1%} | {f.get('prefix_hit_rate', 0):.0%} "
                f"| {f.get('lora_loads', 0):.0f} | {f.get('busiest_server_share', 0):.0%} "
                f"| {_fmt(f.get('server_ttft_mean_ms', math.nan))} "
                f"| {'yes' if c['valid'] else 'NO: ' + c['note']} |"
            )
        ttft = picker_vs_best_other(cells, "ttft_p90_ms")
        tput = picker_vs_best_other(cells, "tokens_per_s", lower_is_better=False)
        if ttft and tput:
            lines.append("")
            lines.append(
                f"picker / best other: p90 TTFT {ttft[0]:.2f} (vs {ttft[1]}), "
                f"throughput {tput[0]:.2f} (vs {tput[1]})"
            )
        lines.append("")
    return lines


def plot(document: dict[str, Any], img_dir: Path) -> list[str]:
    """One PNG per workload: p90 TTFT by load and router. Returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for wl in document["workloads"]:
        cells = wl["cells"]
        if not cells:
            continue
        loads = sorted({c["load"] for c in cells})
        routers = _routers(cells)
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        width = 0.8 / max(1, len(routers))
        for i, router in enumerate(routers):
            values = []
            for load in loads:
                match = [c for c in cells if c["load"] == load and c["router"] == router]
                values.append(match[0]["summary"]["ttft_p90_ms"] if match else math.nan)
            xs = [j + i * width for j in range(len(loads))]
            ax.bar(xs, values, width, label=router, color="tab:red" if router == "picker" else None)
        ax.set_xticks([j + width * (len(routers) - 1) / 2 for j in range(len(loads))])
        ax.set_xticklabels([f"{load:.0%} load" for load in loads])
        ax.set_ylabel("p90 TTFT (ms, lower is better)")
        ax.set_title(f"{wl['workload']}: p90 time to first token")
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        name = f"routing-{wl['workload']}.png"
        fig.savefig(img_dir / name)
        plt.close(fig)
        names.append(name)
    return names


def _overhead_vs_loaded(document: dict[str, Any]) -> float:
    overhead = (document.get("overhead") or {}).get("overhead_ms", math.nan)
    p50s = [
        c["summary"]["ttft_p50_ms"]
        for wl in document["workloads"]
        for c in wl["cells"]
        if c["router"] == "picker" and c["summary"] and not math.isnan(c["summary"]["ttft_p50_ms"])
    ]
    return max(overhead, 0.0) / min(p50s) if p50s and not math.isnan(overhead) else math.nan


def render_markdown(document: dict[str, Any], images: Sequence[str]) -> str:
    m = document["matrix"]
    fleet = m["fleet"]
    machine = document["machine"]
    ratios = document["ratios"]
    overhead = document.get("overhead") or {}
    invalid = [c for wl in document["workloads"] for c in wl["cells"] if not c["valid"]]
    cells = [c for wl in document["workloads"] for c in wl["cells"]]
    lines = [
        "# Benchmarks: routing quality",
        "",
        "Generated by `hack/bench/routing.py` (rendered by `hack/bench/report.py`); do not edit by hand.",
        "",
        "The picker (through the local gateway: extension server + picker + real Envoy) against what users",
        "would deploy instead, on the same simulated vLLM fleet with the same seeded open-loop Poisson arrivals.",
        "Each run starts from cold caches (prefix cache and LoRA residency reset, picker restarted).",
        "`server TTFT mean` is the simulated servers' own mean time to first token (arrival at the server",
        "to first token): routing quality without the router's own path overhead, which the client-side",
        "TTFT columns include.",
        "",
        "## Summary",
        "",
        f"- picker / round_robin p90 TTFT on shared_prefix at the highest load: "
        f"**{_fmt(ratios['shared_prefix_p90_ttft_vs_round_robin'], 2)}** (target <= 0.5)",
        "- picker / best other router p90 TTFT at the highest load on shared_prefix: "
        f"**{top_load_vs_best_other(document, 'shared_prefix')}**, on multi_lora: "
        f"**{top_load_vs_best_other(document, 'multi_lora')}** (target < 1 on both)",
        f"- worst picker / best other router p90 TTFT over all workloads and loads: "
        f"**{_fmt(ratios['worst_p90_ttft_vs_best_other'], 2)}** (target <= 1.05)",
        f"- picker's real overhead on an idle fleet (its TTFT minus round_robin's): "
        f"{_fmt(overhead.get('overhead_ms', math.nan), 1)} ms, "
        f"{overhead.get('overhead_fraction', math.nan):.1%} of its idle TTFT; "
        f"{_overhead_vs_loaded(document):.1%} of its lowest p50 TTFT under load "
        f"(fairness limit 2% applies to runs faster than real time; this one runs "
        f"{fleet['time_scale']}x slower); where it goes: "
        "[picker-overhead.md](picker-overhead.md#where-the-time-goes-inside-the-gateway)",
        f"- runs flagged invalid (machine saturated or load generator late): {len(invalid)} of {len(cells)}",
        "",
    ]
    if invalid:
        lines += [
            "**This run is not valid as a whole**: the machine was saturated during some runs (it is shared),",
            "so those numbers measure CPU contention as much as routing. Re-run on an idle machine.",
            "",
        ]
    lines += ["## Results", ""]
    for wl in document["workloads"]:
        cap = wl["capacity"]
        lines.append(f"### {wl['workload']}")
        lines.append("")
        lines.append(f"{wl['description']}. {wl['servers']} servers. Capacity (overload probe through Envoy")
        lines.append(
            f"least_request): {cap['measured']:.1f} req/s (latency-model estimate {cap['estimate']:.1f}); "
            f"idle TTFT ms: " + ", ".join(f"{k} {v:.1f}" for k, v in wl["idle_ttft_ms"].items()) + "."
        )
        for router, why in wl.get("skipped_routers", {}).items():
            lines.append(f"{router} not measured: {why.splitlines()[0]}.")
        if len(wl.get("deployments", ())) > 1:
            lines.append(
                "The split is random per request for every router (Envoy's weighted clusters behind the "
                "picker, the load generator for the others), so which requests meet the slow model differs: "
                "over a few hundred requests its share moves by about 3 points either way, and p90 TTFT, "
                "set by the slow model, by several percent between runs."
            )
        lines.append("")
        image = f"routing-{wl['workload']}.png"
        if image in images:
            lines += [f"![{wl['workload']} p90 TTFT](img/{image})", ""]
        lines += workload_table(wl)
    lines += [
        "## Harness CPU use (fraction of one core, mean over the runs)",
        "",
        "| part | mean | max |",
        "|---|---:|---:|",
    ]
    for part in ("loadgen", "fleet_and_harness", "router"):
        values = [c["cpu"].get(part, 0.0) for c in cells]
        if values:
            lines.append(f"| {part} | {sum(values) / len(values):.2f} | {max(values):.2f} |")
    picker_cpu = [c["cpu"]["router"] for c in cells if c["router"] == "picker"]
    if picker_cpu:
        lines.append(
            f"| router = picker + its Envoy | {sum(picker_cpu) / len(picker_cpu):.2f} | {max(picker_cpu):.2f} |"
        )
    busy = [c["machine_busy"] for c in cells]
    lines += [
        "",
        f"Whole machine busy: mean {sum(busy) / max(1, len(busy)):.0%}, max {max(busy, default=0):.0%} "
        f"(a run above 97%, or one where the load generator sent a request more than 25 ms late at p99, is flagged invalid).",
        "",
        "## Setup",
        "",
        f"- machine: {machine.get('cpu_model') or 'unknown CPU'}, {machine.get('cpus')} cores, "
        f"{machine.get('memory_gb')} GB, Linux {machine.get('kernel')}, Python {machine.get('python')}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in machine.get('loadavg_at_start', []))}",
        f"- mode `{document['mode']}`: loads {', '.join(f'{x:.0%}' for x in m['loads'])} of measured capacity, "
        f"{m['duration']:.0f} s of arrivals per run (the first {m['warmup']:.1f} s left out of the stats), seed {m['seed']}; "
        f"whole run took {document['elapsed_s'] / 60:.1f} min",
        f"- simulated servers (`simulator`, H100 latency model of docs/model-server-latency.md): max_num_seqs {fleet['max_num_seqs']}, "
        f"KV cache {fleet['kv_cache_tokens']:,} tokens (also the prefix-cache size), max_loras {fleet['max_loras']}, "
        f"LoRA load {fleet['lora_load_ms']:.0f} ms, time_scale {fleet['time_scale']} "
        f"(simulated time runs {fleet['time_scale']}x slower than real time, never faster; all times above are "
        "measured real milliseconds; divide by time_scale for H100-equivalent model times, keeping in mind that "
        "the gateway's own overhead is real time and does not shrink with the model)",
        "- routers: Envoy 1.40 static config with one STATIC cluster per Deployment (a Kubernetes Service each) "
        "and `round_robin` / `least_request` / `random`; clients pick the Service with a header, and for the canary "
        "the client makes the 50/50 split itself (a plain Service cannot split by model); the picker via the local "
        "gateway with its default scheduler; `vllm-router` 0.1.17 and `sglang-router` 0.3.2 (PyPI) with "
        "`--policy cache_aware`, on single-Service workloads",
        "- the load generator is one asyncio process (aiohttp, streaming SSE, `stream_options.include_usage`), "
        "separate from the fleet's process; TTFT is the first chunk carrying text",
        "",
        "## Re-run",
        "",
        "```",
        "python -m venv ~/.cache/bench-routers-venv && ~/.cache/bench-routers-venv/bin/pip install "
        "vllm-router==0.1.17 sglang-router==0.3.2   # optional",
        ".venv/bin/pip install matplotlib            # plots",
        ".venv/bin/python hack/bench/routing.py      # default matrix; --full adds 95% load; --quick is the smoke run",
        ".venv/bin/python hack/bench/report.py docs/img/routing-results.json   # re-render this page",
        "```",
        "",
    ]
    return "\n".join(lines)


def render(document: dict[str, Any], docs_dir: Path) -> Path:
    """Write docs_dir/benchmarks.md and docs_dir/img/routing-*.png."""
    try:
        images = plot(document, docs_dir / "img")
    except ImportError:  # matplotlib is a bench-only dependency
        images = []
    out = docs_dir / "benchmarks.md"
    out.write_text(render_markdown(document, images))
    return out


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: report.py RESULTS.json", file=sys.stderr)
        return 2
    document = json.loads(Path(argv[0]).read_text())
    print(render(document, Path(__file__).resolve().parents[2] / "docs"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
