"""Kernel speed against the memory floor (issue 15 items 1, 2, 4, 6); not run in CI.

Prints, in one run, on one process (numba threads = all cores), at N² pixels (default 1024²),
L = 2 references, T = 100 energies:

- one RUM-TV iteration (10 Jacobi sweeps) / one ``np.copyto`` of its own state array:
  NumPy reference on a float64 state, NumPy reference on the float32 state the engine passes,
  fused numba float32 with and without the residual channels;
- one RUM-PnP(tv) iteration / copy of its state, NumPy and fused;
- the TV (Chambolle) denoiser on one N² map: scikit-image vs numba;
- ``bx.lcf`` (nnls, float32 stack, baseline "none" and "pre-edge") pixels/s vs the package's
  NNLS kernel on AᵀY (NumPy reference and numba, :mod:`bigxanes.kernels.fused_lcf`);
- numba compile (or cache load) time, apart from the iteration times.

Every time is the best of ``--repeat`` runs. Run from the repository root (unset the
OpenBLAS core override for this command only; see /work/.library/env/README.md)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_speed.py [--n 1024]

Writes ``benchmarks/results/bench_speed.md`` (``--lcf-only``: the LCF rows alone, to
``bench_speed_lcf.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial

import numpy as np
from _common import RESULTS, git_rev


def best(f, repeat: int, warm: bool = False) -> float:
    """Best wall time of ``repeat`` calls of ``f`` (after one untimed call when ``warm``)."""
    if warm:
        f()
    t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def best_cpu(f, repeat: int) -> float:
    """Least process CPU time (all threads) of ``repeat`` calls of ``f``: the work done, less
    sensitive than wall time to other processes on a shared machine."""
    t = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        f()
        t = min(t, time.process_time() - t0)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="image edge (pixels)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    ap.add_argument("--lcf-only", action="store_true", help="only the LCF rows")
    a = ap.parse_args()

    t0 = time.perf_counter()
    import numba

    from bigxanes.kernels import fused
    from bigxanes.kernels.admm import StateLayout, admm_iteration, initial_state

    t_compile = {
        m: fused.compile_fused(2, m, 2) for m in ("tv", "pnp")
    }  # first call: compile or load numba's cache
    t_import = time.perf_counter() - t0

    N, L, T, r = a.n, 2, 100, a.repeat
    rng = np.random.default_rng(0)
    A = np.abs(rng.standard_normal((T, L))) + np.linspace(0, 1, T)[:, None] * [1, 2]
    AtA = A.T @ A
    rows: list[tuple[str, float, float]] = []  # (what, seconds, ratio)

    def state(method, dtype):
        lay = StateLayout(L, 2, method)
        M0 = rng.random((L, N, N))
        S = initial_state(rng.random((L, N, N)), rng.random((N, N)), M0, lay)
        return lay, S.astype(dtype)

    rum = () if a.lcf_only else (("tv", "RUM-TV"), ("pnp", "RUM-PnP(tv)"))
    for method, label in rum:
        kw = dict(lam=0.02, rho=0.3, rho_next=0.3 * (1.05 if method == "pnp" else 1.0))
        for dtype in (np.float64, np.float32):
            lay, S = state(method, dtype)
            dst = np.empty_like(S)
            tc = best(partial(np.copyto, dst, S), r)
            name = np.dtype(dtype).name
            rows.append((f"copy of the {label} state ({name}, {S.nbytes / 1e6:.0f} MB)", tc, 1.0))
            tn = best(partial(admm_iteration, S, layout=lay, AtA=AtA, **kw), min(r, 2))
            rows.append((f"{label} iteration, NumPy reference, {name} state", tn, tn / tc))
            if dtype == np.float32:
                out = np.empty((lay.n_channels, N, N), np.float32)
                f = partial(fused.admm_iteration_fused, S, layout=lay, AtA=AtA, **kw)
                tf = best(partial(f, residuals=False, out=out), r, warm=True)
                rows.append((f"{label} iteration, fused float32, no residuals", tf, tf / tc))
                tr = best(f, r, warm=True)
                rows.append((f"{label} iteration, fused float32, with residuals", tr, tr / tc))
                rows.append((f"{label}: NumPy (float32 state) / fused", tn / tf, float("nan")))

    if not a.lcf_only:
        from skimage.restoration import denoise_tv_chambolle

        from bigxanes.kernels.fused_tv import denoise_tv_chambolle_numba

        v = rng.random((N, N))
        w = 0.02 / 0.3
        ts = best(lambda: denoise_tv_chambolle(v, weight=w, eps=1e-5, max_num_iter=100), min(r, 2))
        v32 = v.astype(np.float32)
        tn = best(
            partial(denoise_tv_chambolle_numba, v32, weight=w, eps=1e-5, max_num_iter=100), r, True
        )
        rows.append(("TV denoiser (Chambolle) one map, scikit-image float64", ts, 1.0))
        rows.append(("TV denoiser (Chambolle) one map, numba float32 in/out", tn, tn / ts))

    import bigxanes as bx
    from bigxanes.kernels.fused_lcf import nnls_coefficients_fused
    from bigxanes.kernels.lcf import nnls_coefficients

    M = rng.random((L, N * N))
    Y = (A @ M + 0.01 * rng.standard_normal((T, N * N))).astype(np.float32).reshape(T, N, N)
    energy = np.linspace(7000.0, 7200.0, T)
    bx.lcf(Y[:, :8, :8], A, energy=energy)  # numba: compile or load the cache, untimed
    t_lcf = best(lambda: bx.lcf(Y, A, energy=energy, baseline="none"), r)
    t_lcf_pe = best(lambda: bx.lcf(Y, A, energy=energy), r)
    aty = A.T @ Y.reshape(T, -1).astype(np.float64)
    t_nnls = best(partial(nnls_coefficients, AtA, aty), r)
    t_nnls_f = best(partial(nnls_coefficients_fused, AtA, aty), r, warm=True)
    c_lcf = best_cpu(lambda: bx.lcf(Y, A, energy=energy, baseline="none"), r)
    c_nnls = best_cpu(partial(nnls_coefficients, AtA, aty), r)
    c_nnls_f = best_cpu(partial(nnls_coefficients_fused, AtA, aty), r)
    mps = "[M pixels/s in ratio column]"
    rows.append((f"bx.lcf(nnls), float32 stack, baseline none {mps}", t_lcf, N * N / t_lcf / 1e6))
    rows.append((f"bx.lcf(nnls), float32 stack, pre-edge {mps}", t_lcf_pe, N * N / t_lcf_pe / 1e6))
    rows.append((f"NNLS kernel on AᵀY, NumPy reference {mps}", t_nnls, N * N / t_nnls / 1e6))
    rows.append((f"NNLS kernel on AᵀY, numba {mps}", t_nnls_f, N * N / t_nnls_f / 1e6))
    rows.append(("bx.lcf / NNLS kernel time (NumPy reference)", t_lcf / t_nnls, float("nan")))
    rows.append(("bx.lcf / NNLS kernel time (numba)", t_lcf / t_nnls_f, float("nan")))
    cps = "[M pixels per CPU-second in ratio column]"
    rows.append(
        (f"CPU-s: bx.lcf(nnls), float32 stack, baseline none {cps}", c_lcf, N * N / c_lcf / 1e6)
    )
    rows.append((f"CPU-s: NNLS kernel, NumPy reference {cps}", c_nnls, N * N / c_nnls / 1e6))
    rows.append((f"CPU-s: NNLS kernel, numba {cps}", c_nnls_f, N * N / c_nnls_f / 1e6))

    head = [
        "# Kernel speed vs the memory floor (benchmarks/bench_speed.py)",
        "",
        f"git {git_rev()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" numba {numba.__version__} ({numba.get_num_threads()} threads), "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end",
        f"{N}² pixels, L = {L}, T = {T}; best of {r} (NumPy RUM / skimage / lcf: best of "
        f"{min(r, 2)}). Ratio: iteration / copy of the same state array; denoiser: numba / "
        "skimage; lcf rows: M pixels/s.",
        f"numba import + first call (compile or cache load): {t_import:.2f} s "
        f"(tv {t_compile['tv']:.2f} s, pnp {t_compile['pnp']:.2f} s), not in any row below.",
        "",
        "| what | seconds | ratio |",
        "|---|---:|---:|",
    ]
    lines = head + [f"| {w} | {s:.4f} | {q:.2f} |" for w, s, q in rows]
    text = "\n".join(lines).replace("| nan |", "| |") + "\n"
    print(text)
    if not a.no_write:
        RESULTS.mkdir(exist_ok=True)
        name = "bench_speed_lcf.md" if a.lcf_only else "bench_speed.md"
        (RESULTS / name).write_text(text)


if __name__ == "__main__":
    main()
