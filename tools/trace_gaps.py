"""Where the GPU sat idle in a torch.profiler trace: the share of the traced span with a kernel,
memcpy or memset running, the idle time by gap size, and the largest gaps with the innermost host
operation that spanned each (what the GPU waited for).

The trace is what ``VIRNUCPRO_TORCH_PROFILE=FILE:START:COUNT`` makes of a run's GPU loop (a gzipped
Chrome trace, ``FILE`` with ``.cudaN-PID.json.gz`` added). It found cuDNN's per-shape attention plans
(docs/benchmarks.md#exp-cudnn-attention), e.g.

    VIRNUCPRO_TORCH_PROFILE=/tmp/units.json:20:30 virnucpro predict reads.fa -o /tmp/p --models /tmp/models
    python tools/trace_gaps.py /tmp/units.cuda0-*.json.gz
"""

import argparse
import gzip
import json


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="torch.profiler Chrome trace (.json.gz)")
    ap.add_argument("--top", type=int, default=8, help="how many of the largest gaps to list (default 8)")
    a = ap.parse_args(argv)
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
