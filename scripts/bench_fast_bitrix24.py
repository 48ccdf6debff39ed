#!/usr/bin/env python3
"""Reads the same Bitrix24 lists as dozor's benchmark with fast-bitrix24's get_all.

    bench_fast_bitrix24.py --sim http://127.0.0.1:PORT [--limit-seconds 300] [--json FILE]

Talks to the running `dozor sim` through its inbound-webhook URL (plain http on loopback;
fast-bitrix24 accepts any URL with a scheme, host and path). Request counts come from the
simulator's /_sim/stats, reset before the run. Each list is one `get_all` call with the same
`select` dozor's connector sends; a list still running when the time limit is reached is cut off
and reported as incomplete, with the requests it made so far.
"""

import argparse
import asyncio
import importlib.metadata
import json
import math
import resource
import sys
import time
import urllib.request
import warnings

# (method, select) exactly as dozor's Bitrix24 connector reads them (src/crm/bitrix24/map.rs).
LISTS = [
    ("crm.deal.list", ["*"]),
    ("crm.contact.list", ["*", "PHONE", "EMAIL"]),
    ("crm.activity.list", ["*", "COMMUNICATIONS"]),
]


def http_json(method, url, timeout=30):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def b24_stats(sim):
    s = http_json("GET", f"{sim}/_sim/stats").get("bitrix24", {})
    return s.get("requests", 0), s.get("throttled", 0)


async def run(sim, limit_s):
    from fast_bitrix24 import BitrixAsync

    creds = http_json("GET", f"{sim}/_sim/credentials")
    webhook = f"{sim}/b24/rest/{creds['b24_webhook_user']}/{creds['b24_webhook_secret']}/"
    # Defaults are the standard plan's (pool 50, 2 req/s, batches of 50); only the progress bar
    # is switched off.
    b = BitrixAsync(webhook, verbose=False)

    http_json("DELETE", f"{sim}/_sim/stats")
    started = time.monotonic()
    lists = []
    timed_out = False
    failed = False
    for method, select in LISTS:
        before, _ = b24_stats(sim)
        t = time.monotonic()
        remaining = limit_s - (t - started)
        entry = {"method": method, "select": select}
        if remaining <= 0:
            timed_out = True
            entry.update(done=False, items=0, seconds=0.0, requests=0)
            lists.append(entry)
            continue
        try:
            rows = await asyncio.wait_for(
                b.get_all(method, {"select": select}), timeout=remaining
            )
            entry.update(done=True, items=len(rows))
        except asyncio.TimeoutError:
            timed_out = True
            entry.update(done=False, items=0)
        except Exception as e:  # noqa: BLE001 - reported, the other lists still run
            failed = True
            entry.update(done=False, items=0, error=f"{type(e).__name__}: {str(e)[:300]}")
        entry["seconds"] = time.monotonic() - t
        after, _ = b24_stats(sim)
        entry["requests"] = after - before
        lists.append(entry)
        print(
            f"  {method:<18} {'done' if entry['done'] else ('FAILED' if 'error' in entry else 'CUT OFF'):<8} "
            f"{entry['items']:>8} items {entry['seconds']:8.1f} s {entry['requests']:6} requests",
            flush=True,
        )
        if "error" in entry:
            print(f"    error: {entry['error']}", flush=True)
    elapsed = time.monotonic() - started
    requests, throttled = b24_stats(sim)
    items = sum(e["items"] for e in lists)
    list_calls = sum(e["items"] // 50 + 1 for e in lists if e["done"])
    min_requests = math.ceil(list_calls / 50)
    bound = lambda r: max(0, r - 50) / 2.0  # burst 50, then 2 req/s
    return {
        "tool": "fast-bitrix24",
        "version": importlib.metadata.version("fast-bitrix24"),
        "crm": "bitrix24",
        "lists": lists,
        "complete": not timed_out and not failed,
        "failed": failed,
        "limit_s": limit_s,
        "elapsed_s": elapsed,
        "items_total": items,
        "items_per_s": items / elapsed if elapsed > 0 else 0.0,
        "requests": requests,
        "throttled": throttled,
        "min_requests": min_requests,
        "requests_ratio": requests / max(1, min_requests),
        "bound_s_min_requests": bound(min_requests),
        "bound_share": bound(min_requests) / elapsed if elapsed > 0 else 0.0,
        "bound_s_actual_requests": bound(requests),
        "bound_share_actual_requests": bound(requests) / elapsed if elapsed > 0 else 0.0,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", required=True, help="simulator base URL")
    ap.add_argument("--limit-seconds", type=float, default=300.0)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    warnings.simplefilter("ignore")  # get_all warns about select * without a filter
    sim = a.sim.rstrip("/")
    print(f"fast-bitrix24 get_all benchmark against {sim} (limit {a.limit_seconds:.0f} s)", flush=True)
    out = asyncio.run(run(sim, a.limit_seconds))
    print(f"  fast-bitrix24        {out['version']}")
    print(f"  elapsed              {out['elapsed_s']:.1f} s{'' if out['complete'] else ' (CUT OFF at the limit)'}")
    print(f"  items total          {out['items_total']}")
    print(f"  items/s              {out['items_per_s']:.0f}")
    print(f"  requests             {out['requests']} ({out['throttled']} throttled)")
    print(f"  minimum requests     {out['min_requests']}")
    print(f"  requests / minimum   {out['requests_ratio']:.2f}")
    print(f"  peak RSS             {out['peak_rss_kib'] / 1024:.1f} MiB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    if out["failed"]:
        return 4
    return 0 if out["complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
