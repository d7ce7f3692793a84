#!/usr/bin/python3
"""Random 4 kB read latency of the disk under a file (O_DIRECT, one at a time).

The capped runs of bench/memcap.py read a few hundred kB a query as random
4 kB pages; their p99 follows this distribution. Run it on the sidecar (or
any large file) of the data directory being measured:

  /usr/bin/python3 bench/disklat.py PATH [--reads 3000] [--seed 1]

Prints p50 / p90 / p99 / p99.9 / max in ms; --json for a machine-readable line.
"""
import argparse
import json
import mmap
import os
import random
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    fd = os.open(a.path, os.O_RDONLY | os.O_DIRECT)
    pages = os.fstat(fd).st_size // 4096
    buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
    rng = random.Random(a.seed)
    lat = np.empty(a.reads)
    for i in range(a.reads):
        off = rng.randrange(pages) * 4096
        t = time.perf_counter()
        os.preadv(fd, [buf], off)
        lat[i] = (time.perf_counter() - t) * 1000
    os.close(fd)
    p = dict(zip(("p50", "p90", "p99", "p99.9"), np.percentile(lat, [50, 90, 99, 99.9]).tolist()))
    p["max"] = float(lat.max())
    p["reads"] = a.reads
    if a.json:
        print(json.dumps(p))
    else:
        print("random 4 kB O_DIRECT reads of %s (%d): p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.2f ms"
              % (a.path, a.reads, p["p50"], p["p90"], p["p99"], p["p99.9"], p["max"]))


if __name__ == "__main__":
    main()
