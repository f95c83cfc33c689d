"""What the default k sweep costs and chooses for a catalog of N photos (issue 22).

The vectors are catalog-like (benchmarks/catalog_vectors.py, fitted on clothing-small's train
features, as bench_scale.py does). `diagnose` runs with the default DiagnosticsConfig: above
its 20,000-photo sample it sweeps sqrt(s)..4 sqrt(s) on the sample and scales the suggestion to
N; up to that it sweeps the whole catalog with k at most 100. Prints the seconds, the k values
swept, the run's k and why, and the load average before and after.

    python benchmarks/bench_sweep.py --n 30000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import DATASET, embed_split
from catalog_vectors import fit, generate


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=30_000, help="catalog-like vectors")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--workspace", type=Path, default=Path("bench-work/quality-ws"))
    return p.parse_args()


def main() -> int:
    args = parse_args()
    from vasrch.config import DiagnosticsConfig
    from vasrch.index.training import diagnose

    model = fit(embed_split(args.dataset / "train", args.workspace).vectors)
    vectors = np.concatenate(list(generate(model, args.n, seed=1)))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    diag = diagnose(vectors, DiagnosticsConfig())
    seconds = time.perf_counter() - start
    print(f"photos         {args.n:,} x {vectors.shape[1]}")
    print(f"load average   {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (1 min)")
    print(f"sweep          {seconds:.1f} s over k = {', '.join(map(str, diag.sweep['k']))}")
    print(f"k              {diag.suggested_k}: {diag.reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
