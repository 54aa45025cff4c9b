#!/usr/bin/env python3
"""bench/timeline.py: reads bench/ktrace.so's file (one line a kernel, copy or
memset with the device's start and end) and says where the wall time of the
traced span went: busy (something running), the gaps between one end and the
next start, by size, the largest gaps with their neighbours, and the kernels
by total time.
usage: bench/timeline.py trace.txt [N]   (N: how many rows of each list, 15)"""
import sys
from collections import defaultdict


def short(name):
    return name.split('(')[0].replace('void ', '')[:70]


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    top = int(sys.argv[2]) if len(sys.argv) == 3 else 15
    ev = []
    with open(sys.argv[1]) as f:
        for ln in f:
            kind, s, e, stream, name = ln.rstrip('\n').split(' ', 4)
            ev.append((int(s), int(e), kind, int(stream), name))
    if not ev:
        sys.exit('%s: no records (was the span between cudaProfilerStart and Stop?)' % sys.argv[1])
    ev.sort()
    t0, t1 = ev[0][0], max(e for _, e, *_ in ev)
    busy, gaps, end = 0, [], ev[0][0]
    for i, (s, e, kind, _, name) in enumerate(ev):
        if s > end:
            gaps.append((s - end, i))
        busy += max(0, e - max(s, end))
        end = max(end, e)
    kern = sum(e - s for s, e, k, *_ in ev if k == 'K')
    nk = sum(1 for x in ev if x[2] == 'K')
    print('span %.3f ms: busy %.3f ms, idle %.3f ms in %d gaps; %d kernels, %.3f ms of kernel time'
          % ((t1 - t0) / 1e6, busy / 1e6, (t1 - t0 - busy) / 1e6, len(gaps), nk, kern / 1e6))
    for lo, hi in ((0, 1e3), (1e3, 2e3), (2e3, 5e3), (5e3, 2e4), (2e4, 1e5), (1e5, 1e12)):
        g = [d for d, _ in gaps if lo <= d < hi]
        print('  gaps %8.0f-%-8.0f us: %5d, %8.3f ms' % (lo / 1e3, hi / 1e3, len(g), sum(g) / 1e6))
    print('largest gaps:')
    for d, i in sorted(gaps, reverse=True)[:top]:
        print('  %8.1f us  after %-40s before %s' % (d / 1e3, short(ev[i - 1][4]), short(ev[i][4])))
    tot, cnt = defaultdict(int), defaultdict(int)
    for s, e, k, _, name in ev:
        tot[short(name)] += e - s
        cnt[short(name)] += 1
    print('by name (ms, count):')
    for n, t in sorted(tot.items(), key=lambda x: -x[1])[:top]:
        print('  %9.3f %5d  %s' % (t / 1e6, cnt[n], n))


if __name__ == '__main__':
    main()
