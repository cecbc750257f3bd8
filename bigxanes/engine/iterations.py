"""The RUM iterations on the engine: one graph (or one set of Zarr tasks) per ADMM iteration,
driven by :func:`bigxanes.rum.run_admm`, with the state in one of three places
(docs/design.md, "State modes and state blocks").

:class:`RumIterations` holds what is the same for every state mode (λ, the state blocks, the
commit records, checkpoints, the failure hook); a :class:`StateMode` strategy holds where the
state lives:

- :class:`ZarrMode`: each iteration reads state k from one Zarr buffer and writes state k+1 to
  the other, one independent task per state block
  (:func:`~bigxanes.engine.chunked.admm_zarr_block`), then commits. Workers hold only the
  running tasks' working sets (a ``map_overlap`` graph over the buffer kept finished blocks and
  halo slices alive: 2.1 -> 3.3 GiB from 1x to 8x, benchmarks/results/engine.md).
- :class:`MemoryMode`: the float32 state stays persisted in the cluster's memory (a
  ``map_overlap`` graph over a persisted dask array per iteration), checkpointed to the buffer
  the last commit does not name every ``checkpoint_every`` iterations and at the end.
- :class:`PinnedMode`: memory mode on a distributed cluster, one future per state block on a
  fixed owner worker (:class:`~bigxanes.engine.pinned.PinnedState`).

Same kernels, same float32 state, same blocks: the same numbers in every mode; a resume starts
from the last commit of any mode.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..integrity import test_pause
from ..kernels.admm import RESIDUALS
from ..kernels.maps import rum_outputs_block
from ..kernels.moments import gram
from ..kernels.pass1 import Pass1Layout, state_from_pass1
from ..kernels.stats import noise_sigma, noise_variance
from ..pipeline.result import verdict_attrs
from ..rum import History, RumParams, fraction_noise, resolve_lambda, run_admm
from . import chunked
from .chunked import block_regions, map_spatial_blocks, map_spatial_overlap
from .pinned import PinnedState
from .planning import n_threads
from .state import BUFFERS, WorkDir

__all__ = ["InjectedFailure", "MemoryMode", "PinnedMode", "RumIterations", "ZarrMode"]


class InjectedFailure(RuntimeError):
    """Raised by the failure-injection hook (``_fail_after`` / ``BIGXANES_FAIL_AFTER``)."""


def _sums(values: Any) -> dict[str, float] | None:
    """The residual sums by name; None for an iteration without residuals (empty sums)."""
    if len(values) == 0:
        return None
    return {name: float(v) for name, v in zip(RESIDUALS, values, strict=True)}


def _sum_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Sum of per-block residual sums (``(n_res,)`` each, or ``(n_blocks, n_res)`` per group
    of blocks), block by block in C order whatever the grouping."""
    if all(np.size(p) == 0 for p in parts):  # an iteration without residual channels
        return np.zeros(0)
    return np.sum(np.concatenate([np.reshape(p, (-1, len(RESIDUALS))) for p in parts]), axis=0)


def other_buffer(buf: str | None) -> str:
    """The state buffer that ``buf`` (the one the last commit names) is not."""
    return BUFFERS[0] if buf is None else BUFFERS[1 - BUFFERS.index(buf)]


class StateMode:
    """Where the ADMM state lives between iterations (a strategy of :class:`RumIterations`)."""

    memory = False

    def __init__(self, run: RumIterations) -> None:
        self.run = run

    def fresh(self, S0: da.Array) -> None:
        """Hold the initial state (memory modes; the zarr mode commits it instead)."""
        raise NotImplementedError

    def load(self, buf: str) -> None:
        """Hold the state of the committed buffer ``buf``."""

    def step(self, k: int, rho: float, rho_next: float, residuals: bool) -> dict[str, float] | None:
        """Iteration k; the summed residual channels (None without ``residuals``)."""
        raise NotImplementedError

    def advance(self) -> None:
        """The iteration just completed becomes the current state."""

    def save(self, dst: str) -> None:
        """Write the current state to buffer ``dst`` (checkpoint)."""

    def final(self) -> da.Array:
        """The final state as a dask array."""
        return self.run.work.dask(self.run.buf)


class ZarrMode(StateMode):
    """State in the Zarr double buffer: one task per group of consecutive state blocks
    (:func:`~bigxanes.engine.chunked.group_regions`, one group per worker thread when there
    are at least two blocks per thread, else one block per task), each reading the next block
    while it computes this one and writing behind
    (:func:`~bigxanes.engine.chunked.admm_zarr_blocks`)."""

    def __init__(self, run: RumIterations) -> None:
        super().__init__(run)
        nthr = n_threads(run.runner)
        n = len(run.regions)
        self.groups = chunked.group_regions(run.regions, nthr if n >= 2 * nthr else n)

    def step(self, k: int, rho: float, rho_next: float, residuals: bool) -> dict[str, float] | None:
        r = self.run
        src, dst = r.work.path / r.buf, r.work.path / other_buffer(r.buf)
        block = dask.delayed(chunked.admm_zarr_blocks, pure=False)
        kw = r.kernel_kw(rho, rho_next, residuals)
        parts = [block(str(src), str(dst), grp, r.params.halo, **kw) for grp in self.groups]
        (res,) = r.runner.compute(dask.delayed(_sum_parts)(parts))
        r.next_buf = dst.name
        return _sums(res)


class MemoryMode(StateMode):
    memory = True

    def fresh(self, S0: da.Array) -> None:
        (self.S,) = self.run.runner.persist(S0.astype(np.float32).rechunk(self.run.schunks))

    def load(self, buf: str) -> None:
        r = self.run
        (self.S,) = r.runner.persist(r.work.dask(buf, r.schunks))

    def step(self, k: int, rho: float, rho_next: float, residuals: bool) -> dict[str, float] | None:
        r = self.run
        n = r.layout.n_channels
        kw = r.kernel_kw(rho, rho_next, residuals)
        out = map_spatial_overlap(
            chunked.admm_block,
            self.S,
            r.layout.n_out if residuals else n,
            r.params.halo,
            dtype=r.kernel_dtype,
            **kw,
        )
        if not residuals:
            (self.next,) = r.runner.persist(out.astype(np.float32))
            return None
        sums = [out[n + i].sum(dtype=np.float64) for i in range(len(RESIDUALS))]
        self.next, *psums = r.runner.persist(out[:n].astype(np.float32), *sums)
        return _sums(r.runner.compute(*psums))

    def advance(self) -> None:
        self.S = self.next

    def save(self, dst: str) -> None:
        r = self.run
        r.runner.compute(da.store(self.S, r.work.array(dst), lock=False, compute=False))

    def final(self) -> da.Array:
        return self.S


class PinnedMode(StateMode):
    memory = True

    def __init__(self, run: RumIterations) -> None:
        super().__init__(run)
        workers = {a: int(w.get("nthreads") or 1) for a, w in run.runner.workers().items()}
        self.pinned = PinnedState(
            run.runner.scheduler, run.spatial, run.state_tiles, run.params.halo, workers
        )

    def fresh(self, S0: da.Array) -> None:
        self.pinned.load_array(S0.astype(np.float32).rechunk(self.run.schunks))

    def load(self, buf: str) -> None:
        self.pinned.load_zarr(str(self.run.work.path / buf))

    def step(self, k: int, rho: float, rho_next: float, residuals: bool) -> dict[str, float] | None:
        return _sums(self.pinned.iterate(**self.run.kernel_kw(rho, rho_next, residuals)))

    def save(self, dst: str) -> None:
        self.pinned.store(str(self.run.work.path / dst))


class RumIterations:
    """The ADMM iterations of one engine run (see the module docstring).

    Parameters
    ----------
    work, runner : the run's work directory and scheduler
    A : (T, L) references as fitted
    params : RumParams
    stats : pass-1 record (``resid_sum``, ``scale``, ``wmean``)
    n_pixels : pixels of the image
    state_tiles : spatial block of the state (:func:`~bigxanes.engine.planning.state_tiles`)
    mode : "memory" or "zarr"
    checkpoint_every : memory mode: iterations between checkpoints
    fail_after : raise :class:`InjectedFailure` after this many iterations (tests)
    data_weights : a weighted data term (the pass-1 layout is weighted)
    """

    def __init__(
        self,
        work: WorkDir,
        runner: Any,
        A: np.ndarray,
        params: RumParams,
        stats: dict[str, Any],
        spatial: tuple[int, ...],
        state_tiles: tuple[int, ...],
        *,
        mode: str,
        checkpoint_every: int,
        fail_after: int | None,
        data_weights: bool = False,
    ) -> None:
        T, L = A.shape
        self.work, self.runner, self.params = work, runner, params
        self.T, self.L, self.N = T, L, int(np.prod(spatial))
        self.spatial, self.state_tiles = spatial, tuple(state_tiles)
        self.layout = params.state_layout(L, len(spatial), data_weights)
        self.wmean = float(stats.get("wmean", 1.0))
        self.AtA = gram(A)
        self.scale = float(stats["scale"])
        self.noise_var = noise_variance(stats["resid_sum"], self.N, T, L, self.scale)
        self.lam = resolve_lambda(params, self.noise_var, A, self.scale)
        self.fraction_noise = fraction_noise(params, self.noise_var, A, self.scale)
        self.schunks = ((self.layout.n_channels,),) + self.state_tiles
        self.regions = block_regions(spatial, self.state_tiles)
        self.backend = params.kernel_backend(self.N, data_weights)
        self.kernel_dtype = np.float32 if self.backend == "numba" else np.float64
        # numba threads per block task: the cores the executor's concurrent tasks leave
        tasks = max(1, min(n_threads(runner), len(self.regions)))
        self.kernel_threads = max(1, (os.cpu_count() or 1) // tasks)
        self.checkpoint_every, self.fail_after = int(checkpoint_every), fail_after
        self.buf: str | None = None
        self.next_buf: str | None = None
        self.committed: int | None = None
        self.ckpt_seconds, self.n_checkpoints = 0.0, 0
        if mode == "memory":
            self.mode: StateMode = PinnedMode(self) if runner.distributed else MemoryMode(self)
        else:
            self.mode = ZarrMode(self)

    def kernel_kw(self, rho: float, rho_next: float, residuals: bool = True) -> dict[str, Any]:
        """Keyword arguments of :func:`~bigxanes.kernels.admm.admm_step`."""
        p = self.params
        return dict(
            backend=self.backend,
            residuals=residuals,
            threads=self.kernel_threads,
            layout=self.layout,
            AtA=self.AtA,
            lam=self.lam,
            rho=rho,
            rho_next=rho_next,
            tv_sweeps=p.tv_sweeps,
            denoiser=p.denoiser,
            relax=p.relax,
        )

    def _commit(self, done: int, buf: str, hist: History, conv: bool) -> None:
        self.work.commit(
            done,
            buf,
            hist.as_dict(),
            lam=self.lam,
            noise_var=self.noise_var,
            scale=self.scale,
            converged=bool(conv),
        )

    def _converged(self, hist: History) -> bool:
        """The verdict :func:`~bigxanes.rum.run_admm` set at the iteration it stopped at
        (residuals below tol or maps stable), before ``on_iteration`` commits."""
        return bool(hist.iteration) and bool(hist.converged)

    def start(self, P: da.Array, p1: Pass1Layout) -> tuple[History, int, dict | None]:
        """The initial state from pass 1, or the last commit's; (history, start, commit)."""
        commit = self.work.get("commit")
        if commit is None:
            for b in BUFFERS:
                self.work.create(b, self.layout.n_channels, self.spatial, P.chunksize[1:])
            S0 = map_spatial_overlap(
                state_from_pass1,
                P,
                self.layout.n_channels,
                1,
                p1=p1,
                layout=self.layout,
                scale=self.scale,
                kappa=self.params.guide_kappa,
                wmean=self.wmean,
            )
            if self.mode.memory:  # no write: a resume without a commit starts from pass 1
                self.mode.fresh(S0)
                return History(), 0, None
            st = da.store(S0.astype(np.float32), self.work.array(BUFFERS[0]), lock=False)
            self.runner.compute(st)
            self._commit(0, BUFFERS[0], History(), False)
            commit = self.work.get("commit")
        self.buf = commit["buffer"]
        self.mode.load(self.buf)
        start = int(commit["completed"])
        self.committed = start
        return History.from_dict(commit["history"]), start, commit

    def checkpoint(self, done: int, hist: History, final: bool) -> None:
        """Memory modes: store the state to the buffer the last commit does not name, commit."""
        t0 = time.perf_counter()
        dst = other_buffer(self.buf)
        self.mode.save(dst)
        self._commit(done, dst, hist, self._converged(hist))
        self.buf, self.committed = dst, done
        if self.runner.distributed and not final:
            # cut the lineage the scheduler keeps for the persisted chain: a lost worker then
            # recomputes at most `checkpoint_every` iterations, from this checkpoint
            self.mode.load(dst)
        self.ckpt_seconds += time.perf_counter() - t0
        self.n_checkpoints += 1
        test_pause("after_commit")

    def on_iteration(self, k: int, hist: History) -> None:
        """After iteration k: commit (zarr) or checkpoint when due (memory); failure hook."""
        done = k + 1
        if self.mode.memory:
            self.mode.advance()
            final = self._converged(hist) or done >= int(self.params.max_iter)
            if done % self.checkpoint_every == 0 or final:
                self.checkpoint(done, hist, final)
        else:
            self.buf = self.next_buf
            self._commit(done, self.buf, hist, self._converged(hist))
            test_pause("after_commit")
        self.bar.update(1)
        if self.fail_after is not None and done == self.fail_after:
            raise InjectedFailure(f"injected failure after iteration {done}")

    def run(self, P: da.Array, p1: Pass1Layout, progress: bool) -> tuple[da.Array, History]:
        """All iterations from the start (or the last commit); the stacked RUM maps
        (:func:`~bigxanes.kernels.maps.rum_outputs_block`, lazy) and the history."""
        from tqdm.auto import tqdm

        history, start, commit = self.start(P, p1)
        p = self.params
        self.bar = tqdm(
            total=int(p.max_iter), initial=start, disable=not progress, desc=p.method, unit="it"
        )
        try:
            if not (commit or {}).get("converged", False):
                history = run_admm(
                    self.mode.step,
                    p,
                    self.lam,
                    self.N,
                    self.L,
                    start=start,
                    history=history,
                    on_iteration=self.on_iteration,
                    fraction_noise=self.fraction_noise,
                )
            if self.mode.memory and self.committed != history.n_iterations:
                self.checkpoint(history.n_iterations, history, True)  # end on a commit
        finally:
            self.bar.close()
        maps = map_spatial_blocks(
            rum_outputs_block,
            self.mode.final(),
            2 * self.L + 2,
            layout=self.layout,
            AtA=self.AtA,
            scale=self.scale,
            n_energies=self.T,
        )
        return maps, history

    def attrs(self, history: History) -> dict[str, Any]:
        """The RUM attrs of the result (the executor-specific ones included)."""
        return {
            "params": self.params.as_dict(),
            "lam": self.lam,
            "noise_sigma": noise_sigma(self.noise_var, self.scale),
            "kernel_backend": self.backend,
            "history": history.as_dict(),
            **verdict_attrs(history),
            "halo": self.params.halo,
            "checkpoint_every": self.checkpoint_every if self.mode.memory else 1,
            "checkpoint_seconds": round(self.ckpt_seconds, 3),
            "n_checkpoints": self.n_checkpoints,
            "state_tiles": list(self.state_tiles),
        }
