"""Exact vs approximate vector search at scale, through the knowledge base's own index class.

    python benchmarks/bench_retrieval.py                      # 1M vectors of 384 dims (about 10 min here)
    python benchmarks/bench_retrieval.py --vectors 100000     # quicker

Vectors are synthetic but shaped like text embeddings (``embedding_like_vectors``: 1,000 topic
clusters on a 48-dimensional manifold mapped into 384 dimensions, plus noise); queries are fresh
draws from the same mixture. One run builds ``FaissIndex`` exact (``IndexFlatIP``, the baseline) and HNSW (what
``plugins.retrieval`` uses above ``approximate_above``), then reports for single queries the median
and p95 latency, recall@10 of HNSW against exact for several ``ef_search`` values, build times and
the index sizes. Medians; this machine is noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.retrieval.index import FaissIndex, IndexConfig  # noqa: E402


def embedding_like_vectors(count: int, dim: int, seed: int, latent_dim: int = 48, centres: int = 1000) -> np.ndarray:
    """(count, dim) float32 unit vectors shaped like sentence embeddings: topic clusters on a
    low-dimensional manifold (``latent_dim``) mapped into ``dim`` dimensions, plus a little noise.

    Uniform random vectors in 384 dimensions have no near neighbours worth finding and make every
    approximate index look bad; real text embeddings cluster and have a low intrinsic dimension.
    The same ``seed`` gives the same mixture, so queries (another ``count``) come from the same data.
    """
    rng = np.random.default_rng(0)  # the mixture itself is fixed
    anchors = rng.standard_normal((centres, latent_dim), dtype=np.float32)
    mapping = rng.standard_normal((latent_dim, dim), dtype=np.float32) / np.sqrt(latent_dim)
    draws = np.random.default_rng(seed)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        stop = min(count, start + 100_000)
        latent = anchors[draws.integers(0, centres, stop - start)] + 1.0 * draws.standard_normal((stop - start, latent_dim), dtype=np.float32)
        block = latent @ mapping + 0.1 * draws.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed_queries(index: FaissIndex, queries: np.ndarray, k: int) -> tuple[list[float], np.ndarray]:
    """Per-query seconds and the (Q, k) ids, one query at a time (as the plugin searches)."""
    seconds, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query, k)
        seconds.append(time.perf_counter() - started)
        found.append(np.pad(ids, (0, k - len(ids)), constant_values=-1))
    return seconds, np.array(found)


def index_bytes(index: FaissIndex) -> int:
    import faiss

    return int(faiss.serialize_index(index._index).nbytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-search", type=int, nargs="*", default=[32, 64, 128, 256])
    args = parser.parse_args()
    started = time.perf_counter()
    vectors = embedding_like_vectors(args.vectors, args.dim, seed=1)
    queries = embedding_like_vectors(args.queries, args.dim, seed=2)
    ids = np.arange(args.vectors, dtype=np.int64)
    print(f"{args.vectors:,} vectors x {args.dim} dims ({vectors.nbytes / 2**30:.2f} GiB), {args.queries} queries, k={args.k}; "
          f"data made in {time.perf_counter() - started:.1f} s")

    exact = FaissIndex(args.dim, IndexConfig(approximate_above=args.vectors))
    started = time.perf_counter()
    exact.replace(ids, vectors)
    exact_build = time.perf_counter() - started
    exact_seconds, truth = timed_queries(exact, queries, args.k)
    exact_median = statistics.median(exact_seconds)
    print(f"exact (IndexFlatIP): build {exact_build:.1f} s, {index_bytes(exact) / 2**20:.0f} MiB; "
          f"query median {exact_median * 1000:.2f} ms, p95 {np.percentile(exact_seconds, 95) * 1000:.2f} ms")

    approximate = FaissIndex(args.dim, IndexConfig(approximate_above=1))
    started = time.perf_counter()
    approximate.replace(ids, vectors)
    hnsw_build = time.perf_counter() - started
    print(f"HNSW (M={approximate.config.hnsw_m}, efConstruction={approximate.config.ef_construction}): "
          f"build {hnsw_build:.1f} s, {index_bytes(approximate) / 2**20:.0f} MiB")
    print(f"{'ef_search':>9} {'median ms':>10} {'p95 ms':>8} {'recall@10':>10} {'speed-up':>9}")
    for ef in args.ef_search:
        approximate.config.ef_search = ef
        seconds, found = timed_queries(approximate, queries, args.k)
        recall = np.mean([len(set(row) & set(want)) / args.k for row, want in zip(found, truth)])
        median = statistics.median(seconds)
        print(f"{ef:>9} {median * 1000:>10.3f} {np.percentile(seconds, 95) * 1000:>8.3f} {recall:>10.4f} {exact_median / median:>8.1f}x")


if __name__ == "__main__":
    main()
