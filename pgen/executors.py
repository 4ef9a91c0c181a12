"""Where work runs: worker processes on this machine, or tasks on a Ray cluster.

An executor runs *jobs* (tuples of plain data) through a module-level ``work(*job)`` in
worker processes that ``initializer(*initargs)`` prepared once, and hands each result to
``record(result)`` on the calling process as it arrives; a job whose worker could not
return a result (the process died, the node was lost, it ran out of memory) goes to
``failed(job, message)`` instead. The caller alone writes results (the results store, a
predictions file), so every guarantee of the store holds whichever executor runs: every
finished model is recorded as it arrives, a failure costs only its own job, a rerun
computes only what is missing.

* :class:`ProcessPool`: ``workers`` processes on this machine (the ``local`` executor).
* :class:`RayExecutor`: one Ray task per job, with declared CPUs and (fractional) GPUs per
  task, retried a bounded number of times when a worker or node dies. The initializer's
  arguments (the zoo's path, the data samples) are put in Ray's object store once and each
  worker process prepares itself from them on its first task, not per task.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Iterable

from pgen.errors import InputError, PgenNotice

__all__ = ["ProcessPool", "RayExecutor", "make_executor", "open_executor", "EXECUTORS"]

EXECUTORS = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'pgen-pvector[ray]' (or pip install ray)"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ProcessPool:
    """``workers`` processes on this machine; a worker that dies costs only its own job.

    At most ``workers`` jobs are in flight, so when a worker dies (killed, out of memory,
    a crash in native code) the suspects are known: if one job was in flight it goes to
    ``failed``; if several, each runs again alone in a fresh pool, where a second death is
    that job's alone. Every finished job is recorded as it arrives.

    Parameters
    ----------
    workers : int, default=2
        Worker processes (at least 1).
    """

    name = "local"

    def __init__(self, workers: int = 2):
        if workers < 1:
            raise InputError(f"workers must be at least 1; got {workers}")
        self.workers = workers

    threads_per_job = 1  # the workers share the machine's cores

    def _capped(self, jobs: int) -> int:
        """At most one worker per CPU and per job: more only cost start-up time (1000 workers
        took a 4-model zoo 35 s instead of 5). Capping at the CPUs is said as a note; at the
        jobs left (a resumed run) silently."""
        import os
        import warnings

        cpus = os.cpu_count() or 1
        if self.workers > cpus:
            warnings.warn(f"--workers {self.workers} is more than this machine's {cpus} CPUs; using {cpus}",
                          PgenNotice, stacklevel=3)
        return max(1, min(self.workers, cpus, jobs))

    def run(self, jobs: Iterable[tuple], *, initializer: Callable, initargs: tuple, work: Callable,
            record: Callable, failed: Callable) -> None:
        queue = deque((job, False) for job in jobs)  # (job, suspect: was in flight when a worker died)
        workers = self._capped(len(queue))
        empty_breaks = 0
        while queue:
            in_flight = {}
            with ProcessPoolExecutor(workers, initializer=start_worker,
                                     initargs=(os.getpid(), initializer, initargs)) as pool:
                broken = None
                while (queue or in_flight) and broken is None:
                    # a suspect runs alone, so that a second death names it
                    while queue and len(in_flight) < workers and not any(sus for _, sus in in_flight.values()):
                        if queue[0][1] and in_flight:
                            break
                        job, suspect = queue.popleft()
                        try:
                            in_flight[pool.submit(work, *job)] = (job, suspect)
                        except BrokenProcessPool as exc:
                            queue.appendleft((job, suspect))
                            broken = exc
                            break
                    if broken is not None or not in_flight:
                        break
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job, suspect = in_flight.pop(fut)
                        try:
                            result = fut.result()
                        except BrokenProcessPool as exc:
                            broken = exc
                            in_flight[fut] = (job, suspect)  # settled below with the others in flight
                            continue
                        except Exception as exc:  # the job's own failure: recorded, the run goes on
                            failed(job, _error_text(exc))
                            continue
                        record(result)
                if broken is not None:
                    lost = list(in_flight.values())
                    for fut in list(in_flight):
                        if fut.done() and not fut.cancelled() and fut.exception() is None:  # finished before the break
                            record(fut.result())
                            lost.remove(in_flight[fut])
                    empty_breaks = empty_breaks + 1 if not lost else 0
                    if empty_breaks >= 3:  # pools that break with no job in flight: workers cannot start
                        raise RuntimeError(f"worker processes keep dying before doing anything: {broken}")
                    if len(lost) == 1:
                        failed(lost[0][0], f"the worker process scoring this model died ({broken}); "
                                           "often out of memory or a crash in native code")
                    else:
                        queue.extendleft((job, True) for job, _ in reversed(lost))

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------- Ray

_PREPARED: dict = {}  # in each Ray worker process: initializer -> the object ref it was prepared from


def _ray_task(initializer, initargs_box, work, job):
    """One job on a Ray worker. ``initargs_box`` is ``[ObjectRef]``: a ref inside a list is
    not fetched by Ray before the task, so a worker reads the shared arguments only when it
    prepares itself (its first task of a run), not once per task."""
    _prepare(initializer, initargs_box[0])
    return work(*job)


def _prepare(initializer, ref) -> None:
    import ray

    key = (getattr(initializer, "__module__", ""), getattr(initializer, "__qualname__", repr(initializer)))
    if _PREPARED.get(key) != ref.hex():
        initializer(*ray.get(ref))
        _PREPARED[key] = ref.hex()


class _Started:
    """Yielded by a timed task once its worker is prepared: the budget counts from here."""


class _Timed:
    """A timed task's result and the seconds its work took on the worker."""

    def __init__(self, result, seconds: float):
        self.result, self.seconds = result, seconds


def _ray_task_timed(initializer, initargs_box, work, job):
    """:func:`_ray_task` as a streaming generator that first reports that it started."""
    _prepare(initializer, initargs_box[0])
    yield _Started()
    start = time.perf_counter()
    result = work(*job)
    yield _Timed(result, time.perf_counter() - start)  # the driver may notice the start late


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(f"the ray executor needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


class RayExecutor:
    """One Ray task per job, on a Ray cluster.

    Parameters
    ----------
    address : None starts a Ray instance on this machine (stopped again by :meth:`close`);
        ``"auto"`` joins the cluster this machine belongs to; ``"host:6379"`` a head node's
        address; ``"ray://host:10001"`` a remote one through Ray Client (needs
        ``ray[client]``; untested here). When this process is already
        connected to Ray (``ray.init`` was called), that connection is used.
    cpus_per_model, gpus_per_model : the resources each task declares (GPUs may be a
        fraction, e.g. 0.25 runs four models per GPU). Torch in a task uses
        ``max(1, floor(cpus_per_model))`` threads.
    max_retries : how many times Ray reruns a task whose worker process or node died; after
        that the job is recorded as failed. A task killed for memory is recorded at once.
    window : at most this many tasks submitted at a time (None: four per task slot of the
        cluster, at least 16), so that a 270,000-model zoo is not one burst of submissions.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus_per_model: float = 1.0, gpus_per_model: float = 0.0,
                 max_retries: int = 3, window: int | None = None):
        for label, v in (("cpus_per_model", cpus_per_model), ("gpus_per_model", gpus_per_model)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{label} must be a non-negative number; got {v!r}")
        if cpus_per_model == 0 and gpus_per_model == 0:
            raise InputError("a task must declare some CPUs or GPUs (cpus_per_model and gpus_per_model are both 0)")
        if gpus_per_model > 1 and gpus_per_model != int(gpus_per_model):
            raise InputError(f"gpus_per_model above 1 must be a whole number; got {gpus_per_model}")
        if max_retries < 0:
            raise InputError(f"max_retries must be at least 0; got {max_retries}")
        self.address, self.cpus_per_model, self.gpus_per_model = address, float(cpus_per_model), float(gpus_per_model)
        self.max_retries, self.window = int(max_retries), window
        self._started = False  # whether this executor started Ray (and so stops it)
        self._ray = None

    @property
    def threads_per_job(self) -> int:
        return max(1, int(self.cpus_per_model))

    # -- connection ------------------------------------------------------------------
    def connect(self):
        ray = self._ray or _import_ray()
        if not ray.is_initialized():
            import logging

            # Ray's own notices (token authentication, ...) and its workers' console output stay out of
            # pgen's; a failure reaches the run as that job's recorded error. --debug shows them all.
            debug = bool(os.environ.get("PGEN_DEBUG"))
            kwargs = dict(logging_level=logging.INFO if debug else logging.ERROR, log_to_driver=debug)
            if self.address is None:
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=self.address, **kwargs)
            except ConnectionError as exc:
                raise InputError(f"cannot connect to the Ray cluster at {self.address!r}: {exc}") from None
            self._started = self.address is None
        self._ray = ray
        return ray

    def close(self) -> None:
        if self._started and self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        d = {"executor": "ray", "address": self.address or "local instance",
             "cpus_per_model": self.cpus_per_model, "gpus_per_model": self.gpus_per_model}
        if self._ray is not None and self._ray.is_initialized():
            nodes = [n for n in self._ray.nodes() if n.get("Alive")]
            d.update(nodes=len(nodes), cluster_cpus=sum(n["Resources"].get("CPU", 0) for n in nodes),
                     cluster_gpus=sum(n["Resources"].get("GPU", 0) for n in nodes), ray=self._ray.__version__)
        return d

    def _slots(self, ray) -> int:
        """Task slots in the cluster; refuses requests no node can ever satisfy (Ray would
        leave such tasks pending forever)."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        need = {"CPU": self.cpus_per_model, "GPU": self.gpus_per_model}
        fits = [r for r in nodes if all(r.get(k, 0) >= v for k, v in need.items() if v > 0)]
        if not fits:
            have = ", ".join(f"{r.get('CPU', 0):g} CPUs/{r.get('GPU', 0):g} GPUs" for r in nodes) or "no nodes"
            raise InputError(f"no node of the Ray cluster can run a task needing {self.cpus_per_model:g} CPUs and "
                             f"{self.gpus_per_model:g} GPUs (its nodes have {have}); lower --cpus-per-model or "
                             "--gpus-per-model")
        return sum(int(min(r.get(k, 0) / v for k, v in need.items() if v > 0) + 1e-9) for r in fits)

    # -- running -----------------------------------------------------------------------
    def run(self, jobs: Iterable[tuple], *, initializer: Callable, initargs: tuple, work: Callable,
            record: Callable, failed: Callable, budget: float | None = None) -> None:
        """Run every job; with ``budget``, a job still running ``budget`` seconds after it
        started (on its worker, once prepared) is cancelled, its worker killed, and the job
        goes to ``failed`` as timed out."""
        ray = self.connect()
        from ray import exceptions as rx

        window = self.window or max(16, 4 * self._slots(ray))
        fn, extra = (_ray_task, {}) if budget is None else (_ray_task_timed, {"num_returns": "streaming"})
        task = ray.remote(max_calls=0, **extra)(fn).options(  # max_calls=0: reuse workers (Ray's default for
            # GPU tasks is a fresh process per task, which would prepare itself again each time)
            num_cpus=self.cpus_per_model, num_gpus=self.gpus_per_model, max_retries=self.max_retries,
            retry_exceptions=False)  # a Python error is the job's own and reruns the same way
        box = [ray.put(tuple(initargs))]  # the shared arguments travel to each node once
        queue, pending = deque(jobs), {}  # pending: ref (or generator) -> [job, monotonic start or None]
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    job = queue.popleft()
                    pending[task.remote(initializer, box, work, job)] = [job, None]
                refs = list(pending)
                ready, rest = ray.wait(refs, num_returns=1, timeout=1.0)  # a timeout keeps Ctrl-C prompt
                if ready and rest:  # and whatever else has finished meanwhile
                    ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
                for ref in ready:
                    job = pending[ref][0]
                    try:
                        result = ray.get(next(ref) if budget is not None else ref)
                        if budget is not None and isinstance(result, _Started):
                            pending[ref][1] = time.monotonic()
                            continue
                        # over budget by the worker's own clock too, for when the driver saw the start
                        # too late to cancel it (a busy driver, a task that finished quickly after)
                        over = budget is not None and result.seconds > budget
                        result = result.result if budget is not None else result
                    except StopIteration:  # a generator that ended without a result (cannot happen)
                        failed(job, "its Ray task ended without a result")
                    except rx.OutOfMemoryError as exc:
                        failed(job, f"ran out of memory on its Ray node; not retried ({_first_line(exc)})")
                    except (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.RaySystemError) as exc:
                        failed(job, f"its Ray worker or node died {self.max_retries + 1} time(s) "
                                    f"({type(exc).__name__}: {_first_line(exc)})")
                    except rx.RayTaskError as exc:  # the job raised: its own failure
                        cause = getattr(exc, "cause", None)
                        failed(job, _error_text(cause) if cause is not None else _first_line(exc))
                    except rx.RayError as exc:  # cancelled from outside, a runtime env that failed, ...
                        failed(job, f"Ray could not run it ({type(exc).__name__}: {_first_line(exc)})")
                    else:
                        if over:
                            failed(job, f"timed out after the {budget:g} s budget")
                        else:
                            record(result)
                    pending.pop(ref)
                if budget is not None:
                    now = time.monotonic()
                    for ref, (job, started) in list(pending.items()):
                        if started is not None and now - started > budget:
                            ray.cancel(ref, force=True)  # kills its worker, as the local runner does
                            pending.pop(ref)
                            failed(job, f"timed out after the {budget:g} s budget")
        except BaseException:  # Ctrl-C or a failing record: stop the cluster's work, keep what is stored
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def die_with_parent(parent: int, *, every: float = 0.5) -> None:
    """End this worker process when the process that started it is gone: a ``kill -9`` of
    pgen's main process would otherwise leave its workers running, each holding its
    memory, until their jobs end. A daemon thread watches the parent id (portable; the
    kernel's parent-death signal would also fire when the starting *thread* ends)."""
    import threading
    import time

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(every)

    threading.Thread(target=watch, name="pgen-parent-watch", daemon=True).start()


def start_worker(parent: int, initializer: Callable, initargs: tuple) -> None:
    """A worker process's first step: tie its life to the parent's, then prepare."""
    die_with_parent(parent)
    initializer(*initargs)


def make_executor(executor: str | object = "local", *, workers: int = 1, address: str | None = None,
                  cpus_per_model: float = 1.0, gpus_per_model: float | None = None, max_retries: int = 3,
                  device: str = "cpu"):
    """An executor from its name (``"local"``: :class:`ProcessPool` when ``workers > 1``,
    else None, meaning this process; ``"ray"``: :class:`RayExecutor`), or the object as
    given. ``gpus_per_model`` defaults to 1 when ``device`` is CUDA on Ray, else 0.

    Parameters
    ----------
    executor : str or executor object, default="local"
        ``"local"``, ``"ray"`` or an executor object (returned as given).
    workers : int, default=1
        Local worker processes.
    address : str, optional
        The Ray cluster's address (``auto``, ``HEAD_IP:6379``, ``ray://...``).
    cpus_per_model : float, default=1.0
        CPUs each Ray task declares.
    gpus_per_model : float, optional
        GPUs each Ray task declares.
    max_retries : int, default=3
        Ray retries of a task whose worker died.
    device : str, default="cpu"
        The device the models are scored on.

    Returns
    -------
    ProcessPool, RayExecutor, executor object or None
        None means this process.

    Raises
    ------
    InputError
        For an unknown executor name, or CUDA on Ray without GPUs per model.
    """
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        return None if workers == 1 else ProcessPool(workers)  # ProcessPool refuses fewer than 1
    if executor == "ray":
        _import_ray()
        cuda = str(device).startswith("cuda")
        gpus = gpus_per_model if gpus_per_model is not None else (1.0 if cuda else 0.0)
        if cuda and gpus == 0:  # Ray hides every GPU from a task that declares none
            raise InputError("--device cuda on Ray needs --gpus-per-model above 0 (Ray hides the GPUs from "
                             "tasks that declare none)")
        return RayExecutor(address, cpus_per_model=cpus_per_model, gpus_per_model=gpus, max_retries=max_retries)
    raise InputError(f"unknown executor {executor!r}: one of {', '.join(EXECUTORS)}")


@contextmanager
def open_executor(executor: str | object = "local", **options):
    """:func:`make_executor` for the duration of a ``with`` block: an executor made here from
    its name is closed at the end (a Ray instance started for the call is stopped); one
    passed in as an object is the caller's to close.

    Parameters
    ----------
    executor : str or executor object, default="local"
        As for :func:`make_executor`.
    **options
        Keyword arguments of :func:`make_executor`.
    """
    made = make_executor(executor, **options)
    try:
        yield made
    finally:
        if isinstance(executor, str) and made is not None:
            made.close()
