"""Executors: run cells somewhere and hand each result back to the driver, which alone writes the store.

- `run_cell` is what runs one cell, in whatever process: fine-tune into the cell's run folder and
  return {"status": "done", "metrics": ...} or {"status": "failed", "reason": one line}. It never raises.
- `local`: N worker processes on this machine (spawned, each with `threads` torch threads; N = 0 runs
  cells in the driver process itself). With `gpus` G > 0, worker i sees only GPU i mod G
  (CUDA_VISIBLE_DEVICES), so the workers spread over the machine's GPUs (and share them when N > G).
  A worker that dies (killed, out of memory) fails the cells it held; the pool is rebuilt and the
  study goes on. A worker dies with the study process, however that is killed (`_die_with`).
- `ray`: each cell is a Ray task asking for `threads` CPUs (and `gpus` GPUs); results come back to the
  driver through `ray.wait`. `address=None` starts a local Ray instance; otherwise it joins a cluster
  on which vlpeft is installed on every node.

Both keep at most as many cells in flight as there are slots, so a row marked 'running' is running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Callable

_LOADED: dict[str, Any] = {}  # per process: model path -> LoadedModel (pristine; each run gets a shared copy)


def gpu_slots(workers: int, gpus: int) -> list[str | None]:
    """The GPU each local worker is pinned to: worker i gets GPU i mod `gpus` (None: no pinning)."""
    return [str(i % gpus) if gpus else None for i in range(workers)]


def _init_worker(threads: int, slots=None, parent: int | None = None) -> None:
    if parent is not None:
        _die_with(parent)
    # tqdm's default lock holds a multiprocessing semaphore: a worker stopped by the driver (Ctrl-C)
    # cannot release it, and the resource tracker warns of a leak at exit. A worker draws no bars.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    # Ctrl-C in a terminal reaches every process of the group: the driver alone handles it (and stops
    # the workers), so a worker never prints a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gpu = slots.get() if slots is not None else None  # each new worker takes the next slot
    if gpu is not None:  # before CUDA initialises: the worker sees that one GPU, as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _set_threads(threads)


def _die_with(parent: int) -> None:
    """End this worker when the study process `parent` dies, even by SIGKILL (the out-of-memory killer),
    instead of living on under init: on Linux the kernel sends SIGKILL at the parent's death
    (prctl PR_SET_PDEATHSIG); everywhere, and for a parent that died before that was set, a daemon
    thread checks every second that the parent is still this process's parent."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="vlpeft-parent-watch", daemon=True).start()


def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_cell(payload: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune one cell. payload: {"id", "config" (FinetuneConfig fields), "run_dir", "threads"}, and
    optionally "keep_state" (the run keeps its training state) and "resume" (the run folder of a shorter
    run of the cell to go on from, when its state is there and fits)."""
    started = time.time()
    base = {"host": socket.gethostname(), "started": started}
    run_dir = Path(payload["run_dir"])
    try:
        import torch

        import vlpeft
        from vlpeft.peft import shared_copy
        from vlpeft.recipes.finetune import FinetuneConfig, finetune

        torch.set_num_threads(payload["threads"])
        cfg = FinetuneConfig(**{**payload["config"], "threads": payload["threads"]})
        if cfg.model not in _LOADED:
            _LOADED[cfg.model] = vlpeft.load_model(cfg.model)
        pristine = _LOADED[cfg.model]
        # the run's own modules over the checkpoint's tensors: what the method trains is cloned, the rest shared
        loaded = dataclasses.replace(pristine, model=shared_copy(pristine.model))
        metrics = finetune(cfg, run_dir, progress=False, loaded=loaded, log=lambda *a, **k: None,
                           keep_state=bool(payload.get("keep_state")), resume=payload.get("resume"))
        return {**base, "status": "done", "metrics": metrics, "ended": time.time()}
    except Exception as e:  # every failure becomes a row with its reason; the study goes on
        from vlpeft.errors import DiskError, UserError
        from vlpeft.recipes.training import Diverged

        reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        if isinstance(e, DiskError):  # not the cell's failure: the driver stops the study
            return {**base, "status": "failed", "reason": reason, "disk": True, "ended": time.time()}
        if not isinstance(e, (UserError, Diverged)):
            reason = f"{e.__class__.__name__}: {reason}"
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            except OSError:
                pass
        elif isinstance(e, Diverged):
            reason = f"diverged: {reason}"
        return {**base, "status": "failed", "reason": reason, "ended": time.time()}


def _failed(reason: str) -> dict[str, Any]:
    return {"status": "failed", "reason": reason, "host": socket.gethostname(), "ended": time.time()}


def run_local(payloads: list[dict], workers: int, threads: int, on_start: Callable, on_done: Callable,
              gpus: int = 0) -> None:
    """Run payloads on `workers` spawned processes (0: in this process), calling back in the driver;
    with `gpus` > 0 each worker is pinned to one of that many GPUs (`gpu_slots`)."""
    if workers == 0:  # in this process: its threads, but not a worker's SIG_IGN (every process it
        _set_threads(threads)  # started later would inherit it, and ignore Ctrl-C)
        for p in payloads:
            on_start(p["id"])
            on_done(p["id"], run_cell(p))
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending, inflight, pool = deque(payloads), {}, None
    try:
        while pending or inflight:
            if pool is None:  # (again after a worker died: a fresh pool takes fresh slots)
                ctx = mp.get_context("spawn")
                slots = ctx.Queue()
                for gpu in gpu_slots(workers, gpus):
                    slots.put(gpu)
                pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                           initargs=(threads, slots, os.getpid()))
            while pending and len(inflight) < workers:
                p = pending.popleft()
                on_start(p["id"])
                inflight[pool.submit(run_cell, p)] = p
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                p = inflight.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    result, broken = _failed("worker process died (killed or out of memory)"), True
                on_done(p["id"], result)
            if broken:  # the other in-flight cells died with the pool
                for fut, p in inflight.items():
                    on_done(p["id"], _failed("worker process died (killed or out of memory)"))
                inflight = {}
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
    except BaseException:  # Ctrl-C or an error in a callback: stop the workers, not only their queue
        if pool is not None:
            if isinstance(sys.exc_info()[1], KeyboardInterrupt):
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the shutdown
            _stop_workers(pool)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _stop_workers(pool) -> None:
    """Terminate a process pool's workers (a cell in flight is lost: its row stays 'running' and is
    run again on resume) and wait for them, so none outlives the driver."""
    processes = list(getattr(pool, "_processes", {}).values())  # CPython's ProcessPoolExecutor
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(timeout=10)
    pool.shutdown(wait=True, cancel_futures=True)


def connect_ray(address: str | None) -> bool:
    """Connect this process to Ray (a new local instance when address is None), unless it already is.
    True when this call connected it (the caller then shuts it down)."""
    try:
        import ray
    except ImportError:
        from vlpeft.errors import UserError

        raise UserError("executor ray: Ray is not installed (pip install 'ray==2.60.0')") from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    except (ConnectionError, ValueError, RuntimeError) as e:
        from vlpeft.errors import UserError

        raise UserError(f"executor ray: cannot reach Ray at {address or 'a new local instance'} ({e})") from e
    return True


@contextlib.contextmanager
def session(kind: str, address: str | None):
    """The executor reached for the with block: Ray connected (and shut down after, if connected here)
    before a study writes its store, so an unreachable cluster leaves no file; nothing for `local`."""
    started = connect_ray(address) if kind == "ray" else False
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def run_ray(payloads: list[dict], threads: int, gpus: float, address: str | None, on_start: Callable,
            on_done: Callable) -> None:
    """Run payloads as Ray tasks (a local instance when address is None)."""
    started_here = connect_ray(address)  # first: without Ray installed, its one-line error
    import ray

    try:
        remote = ray.remote(run_cell).options(num_cpus=threads, num_gpus=gpus, max_retries=0)
        cpus = ray.cluster_resources().get("CPU", 1)
        slots = max(1, int(cpus // threads))
        pending, inflight = deque(payloads), {}
        while pending or inflight:
            while pending and len(inflight) < slots:
                p = pending.popleft()
                on_start(p["id"])
                inflight[remote.remote(p)] = p
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                p = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # a Ray worker died or the task could not run
                    result = _failed(
                        f"ray task failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    )
                on_done(p["id"], result)
    finally:
        if started_here:
            ray.shutdown()
