"""What the Python peers in bench/ share: median_ms(fn, reps, warmup) runs fn
warmup + reps times on the current CUDA stream and returns the median of the
last reps in milliseconds, timed by CUDA events (as bench/bench.h does for
ours: 20 after 3 warm-ups by default)."""
import torch


def median_ms(fn, reps=20, warmup=3):
    ts = []
    for i in range(warmup + reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        torch.cuda.synchronize()
        if i >= warmup:
            ts.append(e0.elapsed_time(e1))
    return sorted(ts)[reps // 2]
