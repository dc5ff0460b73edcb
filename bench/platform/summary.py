#!/usr/bin/env python3
"""The platform benchmark's readable summary (Markdown) from its JSON lines.

usage: summary.py results.jsonl seed-summary.json prepare.json
"""
import json
import sys

GOAL_P99_MS = 25.0


def ms(us):
    return f"{us / 1000:.1f}"


def pct(rate):
    return "-" if rate is None else f"{rate * 100:.1f}%"


def num(value, places=2):
    return "-" if value is None else f"{value:.{places}f}"


def main():
    every = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    runs = [run for run in every if not run.get("cache", "").startswith("warm-only-")]
    alone = [run for run in every if run.get("cache", "").startswith("warm-only-")]
    seed = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else {}
    prepared = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else {}
    out = []
    w = out.append
    w("# Platform benchmark")
    w("")
    if seed:
        rows = seed.get("rows", {})
        w(
            f"Seed `{seed.get('marker')}`: {seed.get('users')} users "
            f"(plans {json.dumps(seed.get('plans'))}), "
            + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in rows.items())
            + f"; highlights per user {json.dumps(seed.get('highlights_per_user'))}."
        )
    if prepared:
        skew = prepared.get("skew", {})
        w(
            f"Canon: {prepared.get('chapters')} chapters (top 20 chapters "
            f"{skew.get('top_20_share', 0) * 100:.0f}% of page views, top 10% "
            f"{skew.get('top_10_percent_share', 0) * 100:.0f}%), {prepared.get('topics')} topics."
        )
    w("")
    head = (
        "| routers | cache | readers | req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| content cache hits | entity cache hits | FalkorDB q/req | study SQL/req | PG xact/req "
        "| platform CPU ms/req | stores CPU ms/req | other load (cores) |"
    )
    w(head)
    w("|" + "---|" * (head.count("|") - 1))
    for run in runs:
        platform = run.get("platform", {})
        cpu = run.get("cpu", {})
        own = sum(
            v["ms_per_request"] for k, v in cpu.items() if k in ("platform", "router2")
        )
        stores = sum(
            v["ms_per_request"]
            for k, v in cpu.items()
            if k in ("postgres", "redis", "falkordb", "typesense")
        )
        w(
            f"| {run.get('routers')} | {run.get('cache')} | {run.get('connections')} "
            f"| {run.get('rps', 0):.0f} | {ms(run['p50_us'])} | {ms(run['p95_us'])} "
            f"| {ms(run['p99_us'])} | {ms(run['max_us'])} | {run.get('errors')} "
            f"| {pct(platform.get('content_cache', {}).get('hit_rate'))} "
            f"| {pct(platform.get('entity_cache', {}).get('hit_rate'))} "
            f"| {num(platform.get('falkordb_queries_per_request'))} "
            f"| {num(platform.get('study_sql_per_request'))} "
            f"| {num(run.get('stores_per_request', {}).get('pg_transactions'))} "
            f"| {num(own)} | {num(stores)} "
            f"| {num(cpu.get('other processes', {}).get('cores'))} |"
        )
    w("")
    w("Where the time goes (server side, per request: the router's /graphql time; each")
    w("subgraph's fetches as the router timed them; store time as the stores report it):")
    w("")
    subgraphs = sorted(
        {s for run in runs for s in run.get("platform", {}).get("subgraph_fetches", {})}
    )
    head = (
        "| routers | cache | readers | router /graphql ms | "
        + " | ".join(f"{s} ms/req" for s in subgraphs)
        + " | FalkorDB server ms/req | PG active ms/req | Redis server ms/req |"
    )
    w(head)
    w("|" + "---|" * (head.count("|") - 1))
    for run in runs:
        platform = run.get("platform", {})
        routes = platform.get("http_routes", {})
        graphql = routes.get("/graphql", {})
        fetches = platform.get("subgraph_fetches", {})
        stores = run.get("stores_per_request", {})
        falkordb_us = sum(v for k, v in stores.items() if k.startswith("falkordb_") and k.endswith("_usec"))
        w(
            f"| {run.get('routers')} | {run.get('cache')} | {run.get('connections')} "
            f"| {num(graphql.get('mean_ms'))} | "
            + " | ".join(num(fetches.get(s, {}).get("ms_per_request")) for s in subgraphs)
            + f" | {num(falkordb_us / 1000)} | {num(stores.get('pg_active_ms'))} "
            f"| {num(stores.get('redis_usec', 0) / 1000)} |"
        )
    w("")
    w("Per operation (p50 / p99 ms, share of requests):")
    w("")
    ops = ["ReaderPage", "Interlinear", "WordPopover", "Search", "TopicPage", "MyStudy"]
    head = "| routers | cache | readers | " + " | ".join(ops) + " |"
    w(head)
    w("|" + "---|" * (head.count("|") - 1))
    for run in runs:
        cells = []
        for op in ops:
            one = run.get("ops", {}).get(op)
            cells.append(
                "-"
                if not one
                else f"{ms(one['p50_us'])} / {ms(one['p99_us'])} ({one.get('share', 0) * 100:.0f}%)"
            )
        w(f"| {run.get('routers')} | {run.get('cache')} | {run.get('connections')} | " + " | ".join(cells) + " |")
    if alone:
        w("")
        w("Each operation alone (warm, one reader, one router: no queueing, the latency is the")
        w("work; CPU per request of the platform process and of the stores; fetch times as the")
        w("router timed them):")
        w("")
        head = (
            "| operation | req/s | p50 ms | p99 ms | platform CPU ms | stores CPU ms | FalkorDB q "
            "| study SQL | PG xact | content cache hits | entity cache hits | fetch ms (per subgraph) |"
        )
        w(head)
        w("|" + "---|" * (head.count("|") - 1))
        for run in alone:
            platform = run.get("platform", {})
            cpu = run.get("cpu", {})
            stores = sum(
                v["ms_per_request"]
                for k, v in cpu.items()
                if k in ("postgres", "redis", "falkordb", "typesense")
            )
            fetches = ", ".join(
                f"{name} {v['ms_per_request']:.2f}"
                for name, v in sorted(platform.get("subgraph_fetches", {}).items())
            )
            w(
                f"| {run['cache'][len('warm-only-'):]} | {run.get('rps', 0):.0f} "
                f"| {ms(run['p50_us'])} | {ms(run['p99_us'])} "
                f"| {num(cpu.get('platform', {}).get('ms_per_request'))} | {num(stores)} "
                f"| {num(platform.get('falkordb_queries_per_request'))} "
                f"| {num(platform.get('study_sql_per_request'))} "
                f"| {num(run.get('stores_per_request', {}).get('pg_transactions'))} "
                f"| {pct(platform.get('content_cache', {}).get('hit_rate'))} "
                f"| {pct(platform.get('entity_cache', {}).get('hit_rate'))} | {fetches} |"
            )
    w("")
    for run in runs:
        if run.get("cache", "").startswith("warm") and run.get("connections") == 100:
            p99 = run["p99_us"] / 1000
            verdict = "met" if p99 < GOAL_P99_MS else "NOT met"
            w(
                f"Goal (warm p99 < {GOAL_P99_MS:.0f} ms at 100 readers), {run.get('routers')} "
                f"router(s), {run['cache']}"
                + (f" (a {run.get('think_ms'):.0f} ms mean pause per page view)" if run.get("think_ms") else " (closed loop)")
                + f": {run.get('rps', 0):.0f} req/s, p99 {p99:.1f} ms, {verdict}."
            )
    errors = [run for run in every if run.get("errors")]
    for run in errors:
        w(f"Errors in {run['label']}: {json.dumps(run.get('first_errors'))[:400]}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
