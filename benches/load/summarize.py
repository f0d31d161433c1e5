"""Summarises a load run: medians per target and load, ratios to direct and
to nginx, added latency over direct (same round), memory; prints a Markdown
table and writes JSON.  Usage: summarize.py RESULTS.csv MEMORY.csv OUT.json"""
import csv
import json
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
memory = {r["measure"]: float(r["kb"]) for r in csv.DictReader(open(sys.argv[2]))}


def micros(text):
    """wrk latency text (95.00us, 1.20ms, 2.00s) in microseconds."""
    for unit, scale in (("us", 1.0), ("ms", 1000.0), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


for r in rows:
    r["rps"] = float(r["rps"])
    r["p50_us"] = micros(r["p50"])
    r["p99_us"] = micros(r["p99"])
    r["cpu"] = float(r["cpu_ms_per_request"])
    r["svc"] = float(r.get("services_cpu_ms_per_request") or "nan")


def med(target, load, key):
    vals = [r[key] for r in rows if r["target"] == target and r["load"] == load]
    return statistics.median(vals) if vals else None


def per_round_ratio(target, load, base):
    """target/base req/s in each round (both measured in that round)."""
    by_round = {}
    for r in rows:
        if r["load"] == load and r["target"] in (target, base):
            by_round.setdefault(r.get("round", "1"), {})[r["target"]] = r["rps"]
    return [v[target] / v[base] for v in by_round.values() if target in v and v.get(base)]


names = {
    "direct": "direct to the mock",
    "nginx": "nginx, 1 worker",
    "embedded": "Tollgate embedded (SQLite + memory)",
    "pg-redis": "Tollgate Postgres + Redis",
    "pg-team": "Tollgate Postgres + Redis, team hard limit",
}
loads = {"json64": "non-streaming, 64 conns", "sse64": "streaming, 64 conns", "json1": "non-streaming, 1 conn"}
summary = []
print("| load | target | req/s | × direct | × nginx | × nginx per round | p50 µs | p99 µs | added p50 / p99 µs | CPU ms/req | + Postgres & Redis ms/req |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for load, load_name in loads.items():
    direct = med("direct", load, "rps")
    nginx = med("nginx", load, "rps")
    first = True
    for target in names:
        rps = med(target, load, "rps")
        if rps is None:
            continue
        p50, p99 = med(target, load, "p50_us"), med(target, load, "p99_us")
        added50 = med(target, load, "p50_us") - med("direct", load, "p50_us")
        added99 = med(target, load, "p99_us") - med("direct", load, "p99_us")
        entry = {
            "load": load,
            "target": target,
            "rps": round(rps),
            "x_direct": round(rps / direct, 3),
            "x_nginx": round(rps / nginx, 3) if nginx else None,
            "p50_us": p50,
            "p99_us": p99,
            "added_p50_us": round(added50, 1),
            "added_p99_us": round(added99, 1),
            "cpu_ms_per_request": med(target, load, "cpu"),
            "services_cpu_ms_per_request": med(target, load, "svc"),
            "x_nginx_per_round": [round(x, 3) for x in per_round_ratio(target, load, "nginx")],
        }
        summary.append(entry)
        x_nginx = f"{entry['x_nginx']:.2f}" if nginx else "–"
        spread = entry["x_nginx_per_round"]
        x_spread = f"{min(spread):.2f}–{max(spread):.2f}" if spread else "–"
        added = "–" if target == "direct" else f"{added50:.0f} / {added99:.0f}"
        svc = entry["services_cpu_ms_per_request"]
        svc_text = "–" if svc != svc else f"{svc:.3f}"
        print(
            f"| {load_name if first else ''} | {names[target]} | {rps:,.0f} | {rps / direct:.2f} | {x_nginx} | {x_spread} "
            f"| {p50:.0f} | {p99:.0f} | {added} | {entry['cpu_ms_per_request']:.3f} | {svc_text} |"
        )
        first = False
mb = {k: (v / 1024 if not k.startswith(("streams_per", "charge_")) and not k.endswith("non2xx") else v) for k, v in memory.items()}
print()
print(
    f"Memory (embedded): {mb['embedded_rest_after_warmup']:.0f} MB at rest after the warm-up, "
    f"{mb['embedded_peak_over_run']:.0f} MB peak over the run, {mb['embedded_rest_10s_after_run']:.0f} MB 10 s after it."
)
print(
    f"1,000 concurrent slow streams, fresh gateway: {mb['streams_fresh']:.0f} MB fresh, "
    f"{mb['streams_peak']:.0f} MB peak, {mb['streams_rest_10s_after']:.0f} MB 10 s after; "
    f"{memory['streams_per_second']:.0f} streams/s, {memory['streams_non2xx']:.0f} non-2xx."
)
for payer in ("embedded", "owner"):
    billed, served = memory.get(f"charge_{payer}_billed_nano"), memory.get(f"charge_{payer}_served_nano")
    if billed is not None:
        print(f"Charge of {payer}: ${billed / 1e9:.6f} billed for ${served / 1e9:.6f} served by wrk's count (+{(billed - served) / 1e9:.6f}: answers in flight when wrk stopped).")
json.dump({"rows": summary, "memory_mb": mb}, open(sys.argv[3], "w"), indent=1)
