"""Render the benchmark's results as a Markdown report."""

from __future__ import annotations

TARGET_CEILING_SHARE = 0.6
TARGET_P99_MS = 8.0
TARGET_P99_ABOVE_BROKER_MS = 3.0
TARGET_PEER_SHARE = 1.0


def render(results: dict) -> str:
    sections = [
        _header(results),
        _saturation(results),
        _fixed_rates(results),
        _broker(results),
        _peer(results),
        _memory(results),
        _router(results),
        _profile(results),
        _linger_sweep(results),
        _targets(results),
        _notes(results),
    ]
    return "\n".join(section for section in sections if section) + "\n"


def _header(results: dict) -> str:
    machine = results["machine"]
    versions = results["versions"]
    settings = results["settings"]
    load = results["load"]
    lines = [
        f"# hitl-gateway benchmark, {results['started']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, Linux {machine['kernel']}, "
        f"Python {machine['python']}. The load generator, the gateway, Redis and the Kafka broker share these cores. "
        f"1-minute load average: {results['load_average_at_start']:.2f} at the start, {results.get('load_average_at_end', 0):.2f} at the end"
        + (" (other processes were busy, so the figures are pessimistic)." if results["load_average_at_start"] > 1.0 else "."),
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        "",
        f"Settings: {settings['workers']} workers in the multi-worker runs; producer acks={settings['acks']}, "
        f"idempotent, linger_ms={settings['linger_ms']}, max_batch_bytes={settings['max_batch_bytes']}, "
        f"compression={settings['compression']}; {settings['partitions']} partitions per topic; "
        f"each run {settings['duration_s']:.0f} s after {settings['warmup_s']:.0f} s of warm-up; "
        f"wrk with 1 thread and {settings['wrk_connections']} connections.",
        "",
        f"Load: {load['requests']} pre-signed HITL.sh bodies of {load['min_body_bytes']}-{load['max_body_bytes']} bytes "
        f"(mean {load['mean_body_bytes']}) over {load['loops']} loops and every event family in gateway/samples.py; "
        f"{load['duplicates']} of them ({load['duplicate_share']:.0%}) repeat a recent body, as HITL.sh retries do.",
        "",
    ]
    return "\n".join(lines)


def _saturation(results: dict) -> str:
    ceilings = results.get("ceilings", {})
    lines = [
        "## Saturation",
        "",
        "Accepted events/s counts the gateway's `accepted` answers (from /metrics) over the measured window; "
        "requests/s is wrk's count of all answers, duplicates included.",
        "",
        "| run | accepted events/s | requests/s | × empty handler | errors | gateway CPU µs/event | Redis CPU µs/event | broker CPU µs/event | peak RSS per worker |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results.get("saturation", []):
        ceiling = ceilings.get(run["workers"], {}).get("requests_per_s")
        lines.append(
            f"| {run['label']} | {run['accepted_per_s']:,.0f} | {run['requests_per_s']:,.0f} | {_ratio(run['accepted_per_s'], ceiling)} "
            f"| {run['errors']} | {_number(run['gateway_cpu_us_per_event'])} | {_number(run['redis_cpu_us_per_event'])} "
            f"| {_number(run['broker_cpu_us_per_event'])} | {run['peak_rss_mib_per_worker']} MiB |"
        )
    lines += ["", "HTTP ceiling (empty aiohttp handler, same server settings):", "", "| workers | requests/s | errors | CPU µs/request |", "| ---: | ---: | ---: | ---: |"]
    for workers, ceiling in sorted(ceilings.items(), key=lambda item: int(item[0])):
        lines.append(f"| {workers} | {ceiling['requests_per_s']:,.0f} | {ceiling['errors']} | {_number(ceiling['cpu_us_per_request'])} |")
    return "\n".join(lines) + "\n"


def _fixed_rates(results: dict) -> str:
    lines = [
        "## Fixed arrival rates",
        "",
        f"Open loop (bench/loadgen.py), {results['settings']['workers']} workers with the Redis store. Latency runs "
        "from each request's scheduled send time to its response, so queueing behind a stall counts; it includes up "
        "to 1 ms of the generator's timer resolution. The last latency column runs from the actual send instead.",
        "",
        "| events/s | share of saturation | answered 200 | errors | p50 ms | p99 ms | p99.9 ms | max ms | p99 ms from send | generator CPU µs/request |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results.get("fixed_rates", []):
        latency = run["latency_ms"]
        share = f"{run['share_of_saturation']:.0%}" if run.get("share_of_saturation") else "—"
        lines.append(
            f"| {run['rate_per_s']:,.0f} | {share} | {run['ok']:,} | {run['error_count']} | {latency.get('p50', '—')} "
            f"| {latency.get('p99', '—')} | {latency.get('p99.9', '—')} | {latency.get('max', '—')} "
            f"| {run.get('service_time_ms', {}).get('p99', '—')} | {_number(run.get('generator_cpu_us_per_request'))} |"
        )
    return "\n".join(lines) + "\n"


def _broker(results: dict) -> str:
    broker = results.get("broker")
    if not broker:
        return ""
    lines = [
        "## Broker ceiling",
        "",
        f"Kafka's own kafka-producer-perf-test (deploy/kafka.sh perf-test) with {broker['record_bytes']}-byte records, "
        "acks=all, idempotence on, the same linger and batch size.",
        "",
        "| run | records/s | p50 ms | p99 ms | p99.9 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("saturation", "fixed_5000"):
        run = broker[name]
        limit = run["throughput_limit"]
        label = "as fast as possible" if limit < 0 else f"at most {limit:,} records/s"
        lines.append(
            f"| {label} | {run.get('records_per_s', 0):,.0f} | {run.get('p50', '—')} | {run.get('p99', '—')} "
            f"| {run.get('p99.9', '—')} | {run.get('max_ms', '—')} |"
        )
    best = _best_multi_worker(results)
    if best:
        lines += ["", f"The gateway's {best['label']} run reached {_ratio(best['accepted_per_s'], broker['saturation'].get('records_per_s'))} of the broker ceiling."]
    return "\n".join(lines) + "\n"


def _peer(results: dict) -> str:
    peer = results.get("peer")
    if not peer:
        return ""
    best = _best_multi_worker(results)
    ratio = _ratio(best["accepted_per_s"], peer["requests_per_s"]) if best else "—"
    return (
        "## Peer\n\n"
        f"{peer['name']} with bench/peer/redpanda-connect.yaml: {peer['requests_per_s']:,.0f} requests/s, "
        f"{peer['errors']} errors; the gateway reached {ratio} of that.\n"
    )


def _memory(results: dict) -> str:
    memory = results.get("memory")
    if not memory:
        return ""
    return (
        "## Memory per remembered event id\n\n"
        f"- In-memory store: {memory['memory_store_bytes_per_id']:.0f} bytes of Python heap per delivered id "
        f"(tracemalloc over {memory['ids']:,} ids of the default `sha256:<64 hex>` form with their receipts), so "
        f"dedup.max_entries = 1,000,000 costs about {memory['memory_store_bytes_per_id'] * 1e6 / 2**20:,.0f} MiB per worker.\n"
        f"- Redis store: {memory['redis_bytes_per_id']:.0f} bytes of Redis used_memory per delivered id.\n"
    )


def _router(results: dict) -> str:
    runs = results.get("router")
    if not runs:
        return ""
    lines = [
        "## Router",
        "",
        "`hitl-gateway route` reading events produced beforehand (keyed by loop id) and delivering them through http "
        "routes to a receiver on 127.0.0.1 that checks each loop's order within its family topic.",
        "",
        "| routes | events | delivered | events/s per route | deliveries/s | out of order | repeated |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        lines.append(
            f"| {run['routes']} | {run['events']:,} | {run['delivered']:,}{'' if run['complete'] else ' (incomplete)'} "
            f"| {_number(run['events_per_s_per_route'])} | {_number(run['deliveries_per_s'])} | {run['out_of_order']} | {run['repeated']} |"
        )
    return "\n".join(lines) + "\n"


def _profile(results: dict) -> str:
    parts = results.get("profile")
    if not parts:
        return ""
    lines = [
        "## Where a worker's CPU goes",
        "",
        "py-spy samples of one worker during a saturation run, each sample given to the innermost part of the path on its stack.",
        "",
        "| part | share of samples |",
        "| --- | ---: |",
    ]
    lines += [f"| {part} | {share:.0%} |" for part, share in parts]
    return "\n".join(lines) + "\n"


def _linger_sweep(results: dict) -> str:
    runs = results.get("linger_sweep")
    if not runs:
        return ""
    lines = [
        "## kafka.linger_ms",
        "",
        f"{results['settings']['workers']} workers with the Redis store.",
        "",
        "| linger_ms | accepted events/s at saturation | p50 ms at 1,000/s | p99 ms at 1,000/s | p99.9 ms at 1,000/s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        latency = run["at_1000"]["latency_ms"]
        lines.append(
            f"| {run['linger_ms']} | {run['accepted_per_s']:,.0f} | {latency.get('p50', '—')} | {latency.get('p99', '—')} | {latency.get('p99.9', '—')} |"
        )
    return "\n".join(lines) + "\n"


def _targets(results: dict) -> str:
    rows = []
    best = _best_multi_worker(results)
    ceilings = results.get("ceilings", {})
    if best:
        ceiling = ceilings.get(best["workers"], {}).get("requests_per_s")
        share = best["accepted_per_s"] / ceiling if ceiling else None
        rows.append((
            f"{best['workers']} workers: accepted events/s ≥ {TARGET_CEILING_SHARE}× the empty handler",
            _ratio(best["accepted_per_s"], ceiling),
            share is not None and share >= TARGET_CEILING_SHARE,
        ))

    at_5000 = next((run for run in results.get("fixed_rates", []) if run["rate_per_s"] == 5000), None)
    broker_5000 = (results.get("broker") or {}).get("fixed_5000", {})
    if at_5000 and at_5000["latency_ms"]:
        p99 = at_5000["latency_ms"]["p99"]
        rows.append((f"5,000 events/s: p99 ≤ {TARGET_P99_MS:g} ms", f"{p99} ms", p99 <= TARGET_P99_MS))
        if "p99" in broker_5000:
            gap = p99 - broker_5000["p99"]
            rows.append((
                f"5,000 events/s: p99 ≤ perf-test p99 + {TARGET_P99_ABOVE_BROKER_MS:g} ms",
                f"{p99} ms vs {broker_5000['p99']:g} ms ({gap:+.1f} ms)",
                gap <= TARGET_P99_ABOVE_BROKER_MS,
            ))

    peer = results.get("peer")
    if peer and best:
        rows.append(("≥ 1.0× the peer's events/s", _ratio(best["accepted_per_s"], peer["requests_per_s"]), best["accepted_per_s"] >= peer["requests_per_s"]))
    else:
        rows.append(("≥ 1.0× the peer's events/s", "peer not installed", None))

    lines = ["## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    for name, measured, met in rows:
        lines.append(f"| {name} | {measured} | {'—' if met is None else ('yes' if met else 'no')} |")
    return "\n".join(lines) + "\n"


def _notes(results: dict) -> str:
    notes = results.get("notes") or []
    if not notes:
        return ""
    return "## Notes\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def _best_multi_worker(results: dict) -> dict | None:
    runs = results.get("saturation") or []
    return max(runs, key=lambda run: (run["workers"], run["accepted_per_s"])) if runs else None


def _ratio(value: float | None, reference: float | None) -> str:
    if not value or not reference:
        return "—"
    return f"{value / reference:.2f}×"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"
