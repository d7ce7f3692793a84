#!/usr/bin/python3
"""Benchmark data sets and their exact ground truth (cached under bench/data/).

  /usr/bin/python3 bench/datagen.py fmnist
      Fashion-MNIST: 60,000 train images as the base, the 10,000 test images
      as queries (float32 0..255), exact top-100 for L2.

  /usr/bin/python3 bench/datagen.py gen --dim 1024 --rows 1000000 --queries 1000 [--metrics l2,ip,cos]
      Embedding-like synthetic set: clustered, unit-normalized, written in
      chunks to bench/data/clustered_d<D>_n<N>_s<seed>/base.npy (never the
      whole set in memory), with queries from the same distribution (a
      different seed stream, so never a base row) and exact top-100 for each
      metric. Seeded and reproducible: the same arguments give the same bytes.
      --virtual writes no base.npy: the rows are generated again, chunk by
      chunk, whenever they are read (the 10M x 384 set of bench/memcap.py).

The generator: C = max(64, N/1000) cluster centres drawn once from a
Gaussian with a decaying per-coordinate spectrum (sigma_j ~ (1+j)^-0.5 over a
random permutation of coordinates, like the decaying spectrum of real
embeddings), cluster weights from a log-normal (uneven cluster sizes); a
vector is its centre plus Gaussian noise of the same spectrum scaled by
--spread, then normalized to unit length. vidx's random rotation makes the
coordinate-aligned spectrum irrelevant to it; FAISS does not care either.

Ground truth: FAISS brute force (faiss.knn, OpenMP threads) over base blocks
of 200,000 rows, running top-116 merged, then re-scored in float64 and ordered
by (distance, row), using a private OpenBLAS (see benchlib.fast_blas).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def gen_name(dim, rows, seed):
    return f"clustered_d{dim}_n{rows}_s{seed}"


class Generator:
    def __init__(self, dim, rows, seed, spread=0.7):
        self.dim, self.rows, self.seed, self.spread = dim, rows, seed, spread
        rng = np.random.default_rng([seed, 0])
        self.nclusters = max(64, rows // 1000)
        sigma = (1.0 + np.arange(dim)) ** -0.5
        sigma = sigma[rng.permutation(dim)]
        self.sigma = (sigma / np.sqrt((sigma ** 2).sum())).astype(np.float32)
        self.centres = (rng.standard_normal((self.nclusters, dim), dtype=np.float32) * self.sigma)
        w = rng.lognormal(0.0, 1.0, self.nclusters)
        self.weights = w / w.sum()

    def chunk(self, stream, index, n):
        """n vectors of chunk `index` of a stream (1 = base, 2 = queries)."""
        rng = np.random.default_rng([self.seed, stream, index])
        lab = rng.choice(self.nclusters, size=n, p=self.weights)
        x = rng.standard_normal((n, self.dim), dtype=np.float32)
        x *= self.sigma * np.float32(self.spread)
        x += self.centres[lab]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


class HardGenerator:
    """Data shaped like real embeddings, hard for partition indexes (issue 13).

    C = max(64, N/1000) clusters whose sizes follow Zipf's law (weight of the
    r-th cluster ~ r^-zipf); centres ~ N(0, 1) in a random `subspace`-dim
    subspace of the D dims (a seeded orthonormal basis); a vector is its
    centre plus within-cluster Gaussian noise of scale `spread` in that
    subspace (spread near 1: neighbouring clusters overlap), plus isotropic
    noise over all D dims whose norm is `noise` times the subspace part's,
    then normalized to unit length. Queries come from the same mixture
    through another seed stream (never base rows)."""

    def __init__(self, dim, rows, seed, spread=0.9, subspace=100, zipf=1.0, noise=0.35):
        self.dim, self.rows, self.seed, self.spread = dim, rows, seed, spread
        self.subspace, self.zipf, self.noise = min(subspace, dim), zipf, noise
        rng = np.random.default_rng([seed, 0])
        self.nclusters = max(64, rows // 1000)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, self.subspace)))
        self.basis = basis.T.astype(np.float32)  # subspace x dim, orthonormal rows
        self.centres = rng.standard_normal((self.nclusters, self.subspace), dtype=np.float32)
        w = (1.0 + np.arange(self.nclusters)) ** -zipf
        self.weights = w[rng.permutation(self.nclusters)] / w.sum()
        # per-coordinate isotropic noise: norm = noise * the typical subspace norm
        self.noise_sd = np.float32(noise * np.sqrt(self.subspace * (1 + spread ** 2) / dim))

    def chunk(self, stream, index, n):
        rng = np.random.default_rng([self.seed, stream, index])
        lab = rng.choice(self.nclusters, size=n, p=self.weights)
        z = rng.standard_normal((n, self.subspace), dtype=np.float32) * np.float32(self.spread)
        z += self.centres[lab]
        x = z @ self.basis
        x += rng.standard_normal((n, self.dim), dtype=np.float32) * self.noise_sd
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


class VirtualBase:
    """The base rows of a generated set, generated on demand instead of read
    from base.npy (--virtual: 10M x 384 is 15 GB that the table and the
    sidecar already hold twice). Chunks are seeded, so a row is the same
    bytes whenever it is generated. Supports len(), .shape, slices (chunk by
    chunk, as the loader and the ground truth read) and integer arrays
    (grouped by chunk: each chunk generated once per call)."""

    def __init__(self, gen, rows, chunk):
        self.gen, self.rows, self.chunk_rows = gen, rows, chunk
        self.shape = (rows, gen.dim)
        self.dtype = np.dtype(np.float32)
        self._last = (None, None)  # the last chunk: the loader reads it in several slices

    def __len__(self):
        return self.rows

    def _chunk(self, ci):
        if self._last[0] != ci:
            s = ci * self.chunk_rows
            self._last = (ci, self.gen.chunk(1, ci, min(self.chunk_rows, self.rows - s)))
        return self._last[1]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.rows)
            if step != 1:
                raise IndexError("VirtualBase: slices with a step")
            parts = [self._chunk(ci)[max(start - ci * self.chunk_rows, 0):stop - ci * self.chunk_rows]
                     for ci in range(start // self.chunk_rows, (stop - 1) // self.chunk_rows + 1)] if stop > start else []
            return np.concatenate(parts) if parts else np.empty((0, self.gen.dim), np.float32)
        idx = np.asarray(key, dtype=np.int64)
        flat = idx.ravel()
        out = np.empty((len(flat), self.gen.dim), dtype=np.float32)
        ci_of = flat // self.chunk_rows
        for ci in np.unique(ci_of):
            sel = np.nonzero(ci_of == ci)[0]
            out[sel] = self._chunk(int(ci))[flat[sel] - ci * self.chunk_rows]
        return out.reshape(idx.shape + (self.gen.dim,))


def generator_of(meta):
    """The generator a data set's meta.json describes."""
    if meta["name"].startswith("hard"):
        return HardGenerator(meta["dim"], meta["rows"], meta["seed"], meta["spread"], meta["subspace"],
                             meta["zipf"], meta["noise"])
    return Generator(meta["dim"], meta["rows"], meta["seed"], meta["spread"])


def cmd_gen(a):
    hard = getattr(a, "cmd", "gen") == "hard"
    name = a.name or ("hard" if hard else "clustered") + gen_name(a.dim, a.rows, a.seed)[len("clustered"):]
    d = bl.dataset_dir(name)
    os.makedirs(d, exist_ok=True)
    meta_path = os.path.join(d, "meta.json")
    meta = {"name": name, "dim": a.dim, "rows": a.rows, "queries": a.queries, "seed": a.seed,
            "spread": a.spread, "chunk": a.chunk}
    if getattr(a, "virtual", False):
        meta["virtual"] = True
    if hard:
        meta.update(generator="hard: Zipf-sized overlapping clusters in a subspace, plus "
                    "isotropic noise, unit-normalized (bench/datagen.py hard)",
                    subspace=a.subspace, zipf=a.zipf, noise=a.noise)
        g = HardGenerator(a.dim, a.rows, a.seed, a.spread, a.subspace, a.zipf, a.noise)
    else:
        meta["generator"] = "clustered unit-normalized (bench/datagen.py gen)"
        g = Generator(a.dim, a.rows, a.seed, a.spread)
    meta["clusters"] = g.nclusters
    done = False
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
        done = all(old.get(k) == v for k, v in meta.items()) and old.get("complete")
    if done:
        bl.log(f"{name}: data already generated ({d})")
    elif meta.get("virtual"):
        t0 = time.perf_counter()
        bl.log(f"{name}: virtual set, base rows generated on demand (no base.npy)")
    else:
        t0 = time.perf_counter()
        bl.log(f"{name}: generating {a.rows:,} x {a.dim} float32 "
               f"({a.rows * a.dim * 4 / 2**30:.1f} GiB) into {d}/base.npy")
        base = np.lib.format.open_memmap(os.path.join(d, "base.npy"), mode="w+",
                                         dtype=np.float32, shape=(a.rows, a.dim))
        last = t0
        for ci, s in enumerate(range(0, a.rows, a.chunk)):
            n = min(a.chunk, a.rows - s)
            base[s:s + n] = g.chunk(1, ci, n)
            now = time.perf_counter()
            if now - last > 10 or s + n >= a.rows:
                bl.log(f"  generated {s + n:,}/{a.rows:,} rows ({now - t0:.0f} s)")
                last = now
        base.flush()
        del base
    if not done:
        q = g.chunk(2, 0, a.queries)
        np.save(os.path.join(d, "queries.npy"), q)
        meta["complete"] = True
        meta["generate_s"] = round(time.perf_counter() - t0, 1)
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=1)
        for m in bl.METRICS:  # stale ground truth of an older set
            for p in bl.gt_paths(name, m):
                if os.path.exists(p):
                    os.remove(p)
        bl.log(f"  done in {meta['generate_s']} s")
    for m in a.metrics.split(","):
        bl.ensure_gt(name, m)
    print(name)
    return 0


def fmnist_dataset(verbose=True):
    """Caches Fashion-MNIST as bench/data/fmnist/{base,queries}.npy + L2 top-100."""
    import fmnist
    name = "fmnist"
    d = bl.dataset_dir(name)
    os.makedirs(d, exist_ok=True)
    if not os.path.exists(os.path.join(d, "queries.npy")):
        np.save(os.path.join(d, "base.npy"), fmnist.train_images().astype(np.float32))
        np.save(os.path.join(d, "queries.npy"), fmnist.test_images().astype(np.float32))
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"name": name, "generator": "Debian dataset-fashion-mnist (train = base, "
                       "t10k = queries)", "dim": 784, "rows": 60000, "queries": 10000,
                       "complete": True}, f, indent=1)
    bl.ensure_gt(name, "l2", verbose=verbose)
    return name


def cmd_fmnist(a):
    print(fmnist_dataset())
    return 0


def cmd_export(a):
    """TSV files (text COPY format: id, vector) of a small clustered set for
    the pgTAP tests; no ground truth (the tests compute it by exact scans)."""
    g = Generator(a.dim, a.rows, a.seed, a.spread)
    os.makedirs(a.out, exist_ok=True)
    name = f"clustered_d{a.dim}"
    for part, stream, n in (("base", 1, a.rows), ("query", 2, a.queries)):
        x = g.chunk(stream, 0, n)
        with open(os.path.join(a.out, f"{name}_{part}.tsv"), "w") as f:
            for i in range(n):
                # 6 digits: the tests compute their exact answers from the stored values
                f.write(f"{i + 1}\t{{{','.join(f'{v:.6g}' for v in x[i].tolist())}}}\n")
    bl.log(f"{name}: {a.rows:,} rows + {a.queries} queries (spread {a.spread}) -> {a.out}")
    return 0


def main(argv=None):
    bl.fast_blas()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gen", help="clustered unit-normalized set + ground truth")
    p.add_argument("--dim", type=int, default=128, choices=[128, 384, 768, 1024, 1536])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--spread", type=float, default=0.7, help="within-cluster noise scale")
    p.add_argument("--chunk", type=int, default=50_000, help="rows generated per chunk")
    p.add_argument("--metrics", default="l2,ip,cos")
    p.add_argument("--name", help="dataset name (default clustered_d<D>_n<N>_s<seed>)")
    p.add_argument("--virtual", action="store_true",
                   help="no base.npy: base rows are generated on demand (sets larger than the disk allows twice)")
    p.set_defaults(func=cmd_gen)
    p = sub.add_parser("hard", help="hard set (issue 13): Zipf-sized overlapping clusters in a "
                       "subspace plus noise, unit-normalized, + ground truth")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--spread", type=float, default=0.9, help="within-cluster noise (centres ~ N(0,1))")
    p.add_argument("--subspace", type=int, default=100, help="dims of the clusters' subspace")
    p.add_argument("--zipf", type=float, default=1.0, help="cluster sizes ~ rank^-zipf")
    p.add_argument("--noise", type=float, default=0.35, help="isotropic noise norm / subspace norm")
    p.add_argument("--chunk", type=int, default=50_000, help="rows generated per chunk")
    p.add_argument("--metrics", default="l2,ip,cos")
    p.add_argument("--name", help="dataset name (default hard_d<D>_n<N>_s<seed>)")
    p.add_argument("--virtual", action="store_true",
                   help="no base.npy: base rows are generated on demand (sets larger than the disk allows twice)")
    p.set_defaults(func=cmd_gen)
    p = sub.add_parser("export", help="small clustered set as TSV for the pgTAP tests")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--spread", type=float, default=0.7, help="within-cluster noise scale")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("fmnist", help="Fashion-MNIST base/queries + L2 ground truth")
    p.set_defaults(func=cmd_fmnist)
    a = ap.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
