"""Where the GPU sat idle in a torch.profiler trace (``VIRNUCPRO_TORCH_PROFILE``'s .json.gz), e.g.

    python scripts/trace_gaps.py docs/benchmarks-raw/h200-issue3-cudnn-2026-11-30/units.cuda0-1719.json.gz

Prints the share of the traced span with a kernel, memcpy or memset running, the idle time by gap
size, and the largest gaps with the host operations that spanned them (what the GPU waited for).
"""

import argparse
import gzip
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=8)
    a = ap.parse_args()
    events = json.load(gzip.open(a.trace))["traceEvents"]
    gpu_cats = ("kernel", "gpu_memcpy", "gpu_memset")
    gpu = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in gpu_cats), key=lambda e: e["ts"])
    start, end = gpu[0]["ts"], max(e["ts"] + e["dur"] for e in gpu)
    gaps, busy_to = [], gpu[0]["ts"] + gpu[0]["dur"]          # (idle us, from us, next GPU op)
    for e in gpu[1:]:
        if e["ts"] > busy_to:
            gaps.append((e["ts"] - busy_to, busy_to, e["name"]))
        busy_to = max(busy_to, e["ts"] + e["dur"])
    idle = sum(g[0] for g in gaps)
    span = end - start
    print(f"{len(gpu)} GPU operations over {span / 1e3:.1f} ms: busy {1 - idle / span:.2%}, idle {idle / 1e3:.1f} ms")
    for at_least in (10, 100, 1000, 10000):
        big = [g[0] for g in gaps if g[0] >= at_least]
        print(f"  gaps >= {at_least:>5} us: {len(big):5d}, {sum(big) / 1e3:8.1f} ms")
    host = [e for e in events if e.get("ph") == "X" and e.get("cat") == "cpu_op"]
    for length, at, nxt in sorted(gaps, reverse=True)[:a.top]:
        over = [e for e in host if e["ts"] <= at and e["ts"] + e["dur"] >= at + length]
        inner = min(over, key=lambda e: e["dur"])["name"] if over else "-"
        print(f"  {length / 1e3:7.2f} ms idle at {(at - start) / 1e3:9.1f} ms; host in {inner}; next {nxt[:70]}")


if __name__ == "__main__":
    main()
