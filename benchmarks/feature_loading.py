"""How long a paper-sized feature file takes to load: parse (first run) vs cached (later runs).

The paper's ML-1M has 60,406 entities with 512-d CLIP features per modality. This writes such a file
(random values, the real format), then times ``load_feature_file`` without and with the ``.npz`` cache,
and ``align_features`` onto a 60,406-entity id map. Results go to benchmarks/results/feature_loading.json.

    .venv/bin/python benchmarks/feature_loading.py [--entities 60406] [--dim 512]
"""
import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import psutil

from recbole_mkg.atomic_io import atomic_write_json
from recbole_mkg.data.features import align_features, load_feature_file, write_feature_file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=60406)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "feature_loading.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.visual.feat")
        ids = [f"m.{i:07d}" for i in range(args.entities)]
        matrix = rng.normal(size=(args.entities, args.dim)).astype(np.float32)
        t = time.perf_counter()
        write_feature_file(path, ids, matrix)
        write_s = time.perf_counter() - t
        cache = os.path.join(tmp, "cache")
        t = time.perf_counter()
        table = load_feature_file(path, cache_dir=cache)  # parse + validate + write cache
        parse_s = time.perf_counter() - t
        t = time.perf_counter()
        cached = load_feature_file(path, cache_dir=cache)
        cached_s = time.perf_counter() - t
        token2id = {token: i + 1 for i, token in enumerate(ids)}
        t = time.perf_counter()
        aligned, mask, _ = align_features(cached, token2id, args.entities + 1)
        align_s = time.perf_counter() - t
        assert np.array_equal(table.matrix, matrix) and np.array_equal(aligned[1:], matrix) and mask[1:].all()
        result = {
            "entities": args.entities, "dim": args.dim,
            "file_mb": round(os.path.getsize(path) / 2**20, 1),
            "write_s": round(write_s, 2), "first_load_parse_validate_s": round(parse_s, 2),
            "cached_load_s": round(cached_s, 3), "align_s": round(align_s, 3),
            "peak_rss_mb": round(psutil.Process().memory_info().rss / 2**20),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, "
                       f"{round(psutil.virtual_memory().total / 2**30)} GiB",
            "date": time.strftime("%Y-%m-%d"),
        }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
