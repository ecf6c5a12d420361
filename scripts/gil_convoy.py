"""Why `predict` lowers Python's thread switch interval (virnucpro.core.background.GIL_SWITCH_S): a thread
making many short torch calls (each releases the interpreter lock) beside a thread running Python
code waits up to one switch interval to get the lock back after every call.

    python scripts/gil_convoy.py      # docs/benchmarks.md CPU-3
"""
import sys, threading, time, torch
def cpu_bound(stop):
    x = 0
    while not stop.is_set():
        for i in range(1000): x += i * i
def loader():
    ts = [torch.randn(256, 1024) for _ in range(600)]
    t = time.perf_counter()
    for a in ts:
        b = a.to(torch.float16)
        c = b.clone()
    return time.perf_counter() - t
for interval in (0.005, 0.0005, 0.0001):
    sys.setswitchinterval(interval)
    alone = loader()
    stop = threading.Event(); th = threading.Thread(target=cpu_bound, args=(stop,)); th.start()
    contended = loader(); stop.set(); th.join()
    print(f"switch {interval*1e3:.1f} ms: loader alone {alone:.3f} s, beside a CPU-bound thread {contended:.3f} s")
