"""Dense vs sparse (CSR) matrix products for the layers of the seed study's MLP (784-1000-1000-
500-200-10): does unstructured sparsity save time on this CPU, and from which density on?

For each layer and density the weight matrix gets magnitude-pruned random weights (exactly
``round((1 - density) * size)`` zeros), and the product of a batch with it is timed three ways:
``F.linear`` on the dense matrix (zeros and all: its time does not depend on them),
``torch.sparse.mm`` with the matrix in ``torch.sparse_csr`` form, and the same in COO form. All
variants of a layer take turns inside every repeat so a noisy shared machine hits them alike; medians are printed, with the sparse/dense
time ratio and, per batch size, the crossover: the density under which CSR becomes faster
(log-linear interpolation between the measured densities). Also prints the storage bytes.

    .venv/bin/python benchmarks/sparse.py [--densities 0.5,0.1,0.05,0.01] [--batches 1,256] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from fmprune.unstructured.select import weight_masks

LAYERS = [(784, 1000), (1000, 1000), (1000, 500), (500, 200), (200, 10)]   # (in, out)


def sparse_weight(n_in: int, n_out: int, density: float, seed: int) -> torch.Tensor:
    w = torch.randn(n_out, n_in, generator=torch.Generator().manual_seed(seed))
    return w * weight_masks({"w": w}, 1 - density)["w"]


def median_times(fns: list, repeats: int, warmup: int = 3) -> list[float]:
    times: list[list[float]] = [[] for _ in fns]
    for i in range(warmup + repeats):
        for j, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[j].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def repeats_for(n_in: int, n_out: int, batch: int, budget: float) -> int:
    """Enough repeats for a stable median within about ``budget`` seconds per variant of a layer."""
    flops = 2 * n_in * n_out * batch
    return max(5, min(400, int(budget / max(flops / 2e9, 1e-5))))


def crossover(densities: list[float], ratios: list[float]) -> str:
    """The density at which sparse/dense time crosses 1, interpolated in log density."""
    pts = sorted(zip(densities, ratios), reverse=True)
    if all(r < 1 for _, r in pts):
        return f"sparse faster at every density measured (up to {pts[0][0]:.0%})"
    if all(r >= 1 for _, r in pts):
        return f"sparse never faster (down to {pts[-1][0]:.0%} density)"
    for (d_hi, r_hi), (d_lo, r_lo) in zip(pts, pts[1:]):
        if r_hi >= 1 > r_lo:
            t = (math.log(r_hi) - 0) / (math.log(r_hi) - math.log(r_lo))
            d = math.exp(math.log(d_hi) + t * (math.log(d_lo) - math.log(d_hi)))
            return f"sparse faster below about {d:.1%} density"
    return "no single crossover (ratios not monotonic): see the table"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--densities", default="0.5,0.1,0.05,0.01")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared 2-core CPU)")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds per layer, density and format")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
    densities = [float(d) for d in args.densities.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); times are medians in microseconds")
    for batch in batches:
        print(f"\nbatch {batch}")
        print(f"{'layer':<11}{'density':>8}{'dense':>10}{'CSR':>10}{'COO':>10}{'CSR/dense':>11}"
              f"{'dense bytes':>13}{'CSR bytes':>12}")
        whole_dense, whole_csr = 0.0, {d: 0.0 for d in densities}
        for n_in, n_out in LAYERS:
            x = torch.randn(batch, n_in)
            xt = x.t().contiguous()
            weights = [sparse_weight(n_in, n_out, d, seed=i) for i, d in enumerate(densities)]
            csrs = [w.to_sparse_csr() for w in weights]
            coos = [w.to_sparse_coo() for w in weights]
            dense = weights[0]   # a dense kernel's time does not depend on how many zeros it multiplies
            fns = [lambda: F.linear(x, dense)]
            fns += [lambda c=c: torch.sparse.mm(c, xt).t() for c in csrs]
            fns += [lambda c=c: torch.sparse.mm(c, xt).t() for c in coos]
            times = median_times(fns, repeats_for(n_in, n_out, batch, args.budget))   # all interleaved
            dense_t, csr_ts, coo_ts = times[0], times[1:1 + len(densities)], times[1 + len(densities):]
            whole_dense += dense_t
            for d, w, csr, csr_t, coo_t in zip(densities, weights, csrs, csr_ts, coo_ts):
                assert torch.allclose(torch.sparse.mm(csr, xt).t(), F.linear(x, w), atol=1e-3)
                whole_csr[d] += csr_t
                nnz = int(csr.values().numel())
                print(f"{f'{n_in}x{n_out}':<11}{d:>8.0%}{dense_t * 1e6:>10.1f}{csr_t * 1e6:>10.1f}"
                      f"{coo_t * 1e6:>10.1f}{csr_t / dense_t:>11.2f}{w.numel() * 4:>13,}"
                      f"{nnz * 8 + (n_out + 1) * 4:>12,}")
        ratios = [whole_csr[d] / whole_dense for d in densities]
        print("whole MLP: " + ", ".join(f"{d:.0%}: CSR/dense {r:.2f}" for d, r in zip(densities, ratios)))
        print(f"crossover at batch {batch}: {crossover(densities, ratios)}")


if __name__ == "__main__":
    main()
