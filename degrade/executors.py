"""Executors: where shard tasks run (local processes or a Ray cluster), never what they produce.

A shard task is a module-level function ``task(state, index) -> dict`` that is pure in
``(state, index)``: it writes shard ``index`` and returns its stats. ``state`` is small
and picklable (e.g. the output folder and the build fingerprint); the task loads what
else it needs once per process. An executor only decides where and when tasks run, so
the output is the same bytes whichever executor and however many workers ran it.

Every failed attempt is recorded (shard, attempt, error); a failed task is run again up
to ``max_retries`` times, then the run stops with :class:`TaskFailed` naming the shards
and errors. A worker process that dies mid-task (killed, out of memory) counts as a
failed attempt like an exception does.

Fault injection for tests only: ``PIRS_TEST_FAULT="SHARD:ATTEMPT:MODE[,..]"`` makes the
task of shard ``SHARD`` fail on its attempt ``ATTEMPT`` (1-based; ``*`` = every attempt),
by ``exit`` (the worker process dies with ``os._exit(3)``) or ``raise`` (a RuntimeError).
It is read by the driver when an executor is made and passed to the tasks explicitly.

Tasks that need something expensive per worker (a captioning model) pass ``setup``:
``setup(state)`` runs once per worker process (once per Ray actor, which declares its
GPUs) and the task gets its result instead of ``state``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

FAULT_ENV = "PIRS_TEST_FAULT"
EXECUTORS = ("local", "ray")
DEFAULT_MAX_RETRIES = 2

TaskFn = Callable[[object, int], dict]
OnResult = Callable[[int, dict], None]


class ExecutorError(RuntimeError):
    """An executor that cannot start (e.g. Ray not installed, cluster unreachable)."""


class TaskFailed(RuntimeError):
    """Shard tasks that failed on every attempt; ``failures`` lists every failed attempt."""

    def __init__(self, failed: list[int], failures: list[dict]):
        self.failed, self.failures = failed, failures
        last = {f["shard"]: f for f in failures}
        parts = [f"shard {s} ({last[s]['attempt']} attempts): {last[s]['error']}" for s in failed[:5]]
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} shard task(s) failed after all retries: " + "; ".join(parts) + more)


@dataclass
class RunReport:
    """What :meth:`Executor.map_shards` did: results by shard and every failed attempt."""

    results: dict[int, dict] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # {"shard", "attempt", "error"}

    @property
    def retried(self) -> list[int]:
        return sorted({f["shard"] for f in self.failures if f["shard"] in self.results})


def parse_faults(spec: str | None) -> dict[int, tuple[str, str]]:
    """``{shard: (attempt or "*", mode)}`` from a :data:`FAULT_ENV` value."""
    out: dict[int, tuple[str, str]] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        try:
            s, attempt, mode = part.strip().split(":")
            out[int(s)] = (attempt, mode)
        except ValueError:
            raise ExecutorError(f"{FAULT_ENV}: cannot parse {part!r} (want SHARD:ATTEMPT:exit|raise)") from None
        if mode not in ("exit", "raise"):
            raise ExecutorError(f"{FAULT_ENV}: mode must be exit or raise, got {mode!r}")
    return out


_SETUP_CACHE: dict = {}


def run_task(task: TaskFn, state: object, index: int, attempt: int, faults: dict | None = None,
             setup: Callable | None = None) -> dict:
    """Run one attempt of one shard task in this process (the unit every executor schedules)."""
    fault = (faults or {}).get(index)
    if fault is not None and fault[0] in ("*", str(attempt)):
        if fault[1] == "exit":
            os._exit(3)
        raise RuntimeError(f"injected fault in shard {index}, attempt {attempt}")
    if setup is not None:  # once per process and state
        key = (setup.__module__, setup.__qualname__, hashlib.sha256(pickle.dumps(state)).hexdigest())
        if key not in _SETUP_CACHE:
            _SETUP_CACHE.clear()
            _SETUP_CACHE[key] = setup(state)
        state = _SETUP_CACHE[key]
    return task(state, index)


def _error(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    name = type(e).__name__
    return f"{name}: {msg}" if msg else name


class Executor:
    """Runs shard tasks; subclasses say where. Use as a context manager or call :meth:`close`."""

    name = "base"
    _setup: Callable | None = None
    _poll: Callable[[], None] | None = None

    def __init__(self, workers: int = 1, max_retries: int = DEFAULT_MAX_RETRIES):
        if workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ExecutorError(f"--max-retries must be 0 or more, got {max_retries}")
        self.workers, self.max_retries = workers, max_retries
        self.faults = parse_faults(os.environ.get(FAULT_ENV))

    def map_shards(self, task: TaskFn, indices: Iterable[int], state: object,
                   on_result: OnResult | None = None, setup: Callable[[object], object] | None = None,
                   poll: Callable[[], None] | None = None) -> RunReport:
        """Run ``task(state, i)`` for every ``i``; ``on_result(i, stats)`` as each finishes (any order).

        ``poll()`` is called about twice a second while tasks run elsewhere (to update a
        progress bar from a shared counter).

        With ``setup``, each worker runs ``setup(state)`` once and tasks get
        ``task(setup(state), i)``. Raises :class:`TaskFailed` when a task failed
        ``1 + max_retries`` times (after the other tasks have finished), with every failed
        attempt in ``.failures``.
        """
        self._setup, self._poll = setup, poll
        report = RunReport()
        todo = list(indices)
        attempts = dict.fromkeys(todo, 0)
        exhausted: list[int] = []
        while todo:
            retry: list[int] = []
            for i, res in self._run_round(task, todo, state, attempts):
                if isinstance(res, BaseException):
                    report.failures.append({"shard": i, "attempt": attempts[i], "error": _error(res)})
                    (retry if attempts[i] <= self.max_retries else exhausted).append(i)
                else:
                    report.results[i] = res
                    if on_result is not None:
                        on_result(i, res)
            todo = sorted(retry)  # the others' retries run before a failure ends the run
        if exhausted:
            raise TaskFailed(sorted(exhausted), report.failures)
        return report

    def _run_round(self, task: TaskFn, todo: list[int], state: object, attempts: dict[int, int]):
        """Yield ``(index, stats or exception)`` for one attempt of each index; bumps ``attempts``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- local processes


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    exit_with_parent()


def exit_with_parent() -> None:
    """End this worker process soon after its parent dies (a killed run must not leave workers behind)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="pirs-parent-watch").start()


class LocalExecutor(Executor):
    """``workers`` spawned processes on this machine (in this process when ``workers`` is 1).

    With one worker a crash of the task's process is the driver's crash, so fault
    injection of mode ``exit`` is turned into ``raise`` there.
    """

    name = "local"

    def __init__(self, workers: int = 1, max_retries: int = DEFAULT_MAX_RETRIES, pool=None):
        super().__init__(workers, max_retries)
        self._setup = None
        self._pool = pool  # a caller's spawn pool to reuse (its workers must run _init_worker's set-up)
        self._own_pool = pool is None

    def _get_pool(self):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker)
            self._own_pool = True
        return self._pool

    def _run_round(self, task, todo, state, attempts):
        if self.workers == 1:
            import cv2

            faults = {k: (a, "raise") for k, (a, _) in self.faults.items()}
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                for i in todo:
                    attempts[i] += 1
                    try:
                        res = run_task(task, state, i, attempts[i], faults, self._setup)
                    except Exception as e:
                        res = e
                    yield i, res
            finally:
                cv2.setNumThreads(threads)
            return
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pool = self._get_pool()
        futures = {}
        for i in todo:
            attempts[i] += 1
            futures[pool.submit(run_task, task, state, i, attempts[i], self.faults, self._setup)] = i
        pending = set(futures)
        broken = False
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                if self._poll is not None:
                    self._poll()
                for f in done:
                    try:
                        yield futures[f], f.result()
                    except BrokenProcessPool as e:
                        broken = True
                        yield futures[f], RuntimeError(f"worker process died ({e})")
                    except Exception as e:
                        yield futures[f], e
        except BaseException:
            self.close(cancel=True)
            raise
        if broken:  # a dead worker breaks the whole pool: start a fresh one for the retries
            self._own_pool = True
            self.close(cancel=True)

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None and self._own_pool:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._pool = None


# ---------------------------------------------------------------- Ray


def import_ray():
    """``ray``, or a clear error saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ExecutorError('--executor ray needs Ray, which is not installed: pip install "pirs[ray]"') from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 100) -> None:
    """Connect to a Ray cluster (``address`` "auto", "ray://host:port", "host:port") or start a local one.

    Does nothing when Ray is already initialised in this process. A local cluster gets
    ``num_cpus`` CPUs (default: all), no dashboard and a small object store (tasks return
    only stats, data goes to files).
    """
    ray = import_ray()
    if ray.is_initialized():
        return
    if address and address != "auto":
        _check_reachable(address)
    kw: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus, object_store_memory=object_store_mb * 1024 * 1024, **kw)
    except Exception as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise ExecutorError(f"cannot start or reach {where}: {_error(e)}") from None


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast when a Ray address does not answer (``ray.init`` would wait for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address}: want auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} "
                            "(is `ray start --head` running there, and the port open?)") from None


def _ray_run_task(task, state, index, attempt, faults):
    import cv2

    cv2.setNumThreads(1)
    return run_task(task, state, index, attempt, faults)


class _ShardActor:
    """A Ray actor holding ``setup(state)`` (e.g. a loaded model) for the tasks it runs."""

    def __init__(self, setup, state):
        import cv2

        cv2.setNumThreads(1)
        self.obj = setup(state)

    def run(self, task, index, attempt, faults):
        return run_task(task, self.obj, index, attempt, faults)


class RayExecutor(Executor):
    """Shard tasks as Ray tasks (one CPU each, ``gpus_per_worker`` GPUs each), at most ``workers`` in flight.

    Ray's own task retries are off: retries are counted here, so a failure is reported the
    same way whichever executor ran it. Workers are reused between tasks, so a task's
    per-process state loads once per worker.
    """

    name = "ray"

    def __init__(self, workers: int = 1, max_retries: int = DEFAULT_MAX_RETRIES, address: str | None = None,
                 num_cpus: int | None = None, gpus_per_worker: float = 0.0):
        super().__init__(workers, max_retries)
        self._setup = None
        self.address, self.num_cpus, self.gpus_per_worker = address, num_cpus, gpus_per_worker
        init_ray(address, num_cpus)
        ray = import_ray()
        self.nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self._remote = ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_retries=0)(_ray_run_task)

    def _run_round(self, task, todo, state, attempts):
        if self._setup is not None:
            yield from self._run_actors(task, todo, state, attempts)
            return
        ray = import_ray()
        queue = list(todo)
        refs: dict = {}
        state_ref = ray.put(state)
        try:
            while queue or refs:
                while queue and len(refs) < self.workers:
                    i = queue.pop(0)
                    attempts[i] += 1
                    refs[self._remote.remote(task, state_ref, i, attempts[i], self.faults)] = i
                done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                if self._poll is not None:
                    self._poll()
                for r in done:
                    i = refs.pop(r)
                    try:
                        yield i, ray.get(r)
                    except Exception as e:
                        yield i, _unwrap(e)
        except BaseException:
            for r in refs:
                ray.cancel(r, force=True)
            raise


    def _run_actors(self, task, todo, state, attempts):
        """An actor pool: ``setup(state)`` once per actor; a dead actor is replaced for the retries."""
        ray = import_ray()
        from ray.exceptions import RayActorError

        cls = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker, max_restarts=0)(_ShardActor)
        state_ref = ray.put(state)
        idle = [cls.remote(self._setup, state_ref) for _ in range(min(self.workers, len(todo)))]
        queue, refs = list(todo), {}
        try:
            while queue or refs:
                while queue and idle:
                    i, actor = queue.pop(0), idle.pop()
                    attempts[i] += 1
                    refs[actor.run.remote(task, i, attempts[i], self.faults)] = (i, actor)
                done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
                if self._poll is not None:
                    self._poll()
                for r in done:
                    i, actor = refs.pop(r)
                    try:
                        res = ray.get(r)
                    except RayActorError as e:
                        ray.kill(actor)
                        actor = cls.remote(self._setup, state_ref)
                        res = RuntimeError(f"worker (Ray actor) died: {' '.join(str(e).split())[:300]}")
                    except Exception as e:
                        res = _unwrap(e)
                    idle.append(actor)
                    yield i, res
        finally:
            for actor in idle + [a for _, a in refs.values()]:
                ray.kill(actor)


def _unwrap(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return RuntimeError(" ".join(str(e).split())[:500])


def warn_local_paths(executor: Executor, *paths: str | None) -> None:
    """On a Ray cluster of several nodes, warn about local paths: every node must reach them.

    Tasks run on any node and open their inputs and write their outputs themselves, so a
    local path must be on a filesystem every node mounts at the same place (or use a URL).
    """
    import sys

    from .fs import is_url

    local = [str(p) for p in paths if p and not is_url(p)]
    if getattr(executor, "nodes", 1) > 1 and local:
        print(f"warning: the Ray cluster has {executor.nodes} nodes and these paths are local: {', '.join(local)}; "
              "every node must see them at the same place (a shared filesystem), or use s3:// / gs:// URLs",
              file=sys.stderr)


def make_executor(kind: str = "local", workers: int = 1, max_retries: int = DEFAULT_MAX_RETRIES,
                  ray_address: str | None = None, gpus_per_worker: float = 0.0) -> Executor:
    """The executor named ``kind`` (``local`` or ``ray``)."""
    if kind == "local":
        if ray_address:
            raise ExecutorError("--ray-address is for --executor ray")
        return LocalExecutor(workers, max_retries)
    if kind == "ray":
        return RayExecutor(workers, max_retries, address=ray_address, gpus_per_worker=gpus_per_worker)
    raise ExecutorError(f"unknown executor {kind!r} (choose from {', '.join(EXECUTORS)})")


def add_executor_args(p, gpus: bool = False) -> None:
    """The executor flags shared by ``degrade build``, ``degrade ingest``, ``caption run`` and ``bench evaluate``."""
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where shard tasks run: local processes or a Ray cluster (default local); output is identical")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to use with --executor ray: auto, HOST:PORT or ray://HOST:PORT "
                        "(default: start a local cluster)")
    p.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES,
                   help=f"retries of a failed shard task before the run fails (default {DEFAULT_MAX_RETRIES})")
    if gpus:
        p.add_argument("--gpus-per-worker", type=float, default=0.0,
                       help="GPUs each Ray worker declares (default 0); with --executor ray")
