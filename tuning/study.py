"""Study plumbing: samplers, pruners, storages, the trial budget and stale-trial recovery.

Storages:
    * ``""`` (default) or a path ending in ``.journal``: Optuna's journal file
      (``JournalStorage(JournalFileBackend(path))``), safe for several worker processes on
      one machine. Trials of a worker that was killed are found by their worker token
      (host, pid, process start time): when the process is gone, the trial is marked FAIL
      and its parameters are queued again (once per ``tune.max_retry``).
    * an RDB URL (``sqlite:///optuna.db``, ``postgresql://user:pw@host/db``): workers on
      several machines join one study. Workers send heartbeats every ``tune.heartbeat_s``;
      a trial silent for ``tune.grace_s`` is failed and re-queued by the next worker.

The budget ``tune.n_trials`` counts trials across all workers: a worker takes a budget
lock (a file lock, or a PostgreSQL / MySQL advisory lock), counts the study's trials, and
only starts a new one if there is room, so several workers never overshoot. Failed trials
that were re-queued do not count; their retry does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from histoxai.config import ConfigError, TuneConfig


def _tpe(seed: int) -> optuna.samplers.TPESampler:
    # constant_liar: running trials count as bad results, so parallel workers spread out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
}

PRUNERS: dict[str, Callable[[TuneConfig, int], optuna.pruners.BasePruner]] = {
    "median": lambda tune, epochs: optuna.pruners.MedianPruner(
        n_startup_trials=tune.prune_startup_trials, n_warmup_steps=tune.prune_warmup_epochs
    ),
    "hyperband": lambda tune, epochs: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=max(epochs, 1)
    ),
    "none": lambda tune, epochs: optuna.pruners.NopPruner(),
}

WORKER_ATTR = "worker"  # user attr: token of the process running the trial
REASON_ATTR = "fail_reason"  # user attr: why a trial failed
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler registered under ``name`` (``tpe``, ``random``, ``cmaes``), seeded."""
    if name not in SAMPLERS:
        raise ConfigError(f"tune.sampler={name!r}: expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](seed)


def make_pruner(tune: TuneConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner named by ``tune.pruner`` (``median``, ``hyperband``, ``none``)."""
    if tune.pruner not in PRUNERS:
        raise ConfigError(f"tune.pruner={tune.pruner!r}: expected one of {sorted(PRUNERS)}")
    return PRUNERS[tune.pruner](tune, max_epochs)


# --------------------------------------------------------------------------- storage


def storage_url(tune: TuneConfig) -> str:
    """The storage as given, or the default journal file ``<tune.dir>/<study>.journal``."""
    return tune.storage or str(Path(tune.dir) / f"{tune.study_name}.journal")


def storage_kind(url: str) -> str:
    """``journal`` for a journal file, else the RDB dialect (``sqlite``, ``postgresql``, ...)."""
    if "://" not in url:
        if not url.endswith(".journal"):
            raise ConfigError(
                f"tune.storage={url!r}: expected a journal file ending in .journal or an RDB URL "
                "such as sqlite:///optuna.db or postgresql://user:password@host/db"
            )
        return "journal"
    return url.split("://", 1)[0].split("+", 1)[0]


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def open_storage(
    tune: TuneConfig, on_stale: Callable[[FrozenTrial], None] | None = None
) -> optuna.storages.BaseStorage:
    """Open the study storage (creating the journal's folder or the RDB tables)."""
    url = storage_url(tune)
    if storage_kind(url) == "journal":
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            heartbeat_interval=tune.heartbeat_s,
            grace_period=tune.grace_s,
            heartbeat_stale_trial_callback=RetryStale(tune.max_retry, on_stale),
        )


class RetryStale:
    """Re-queue the parameters of a trial whose worker died, and tell ``on_stale`` about it."""

    def __init__(self, max_retry: int, on_stale: Callable[[FrozenTrial], None] | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self._on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry(study, trial)
        if self._on_stale is not None:
            self._on_stale(trial)


# --------------------------------------------------------------------------- workers


def worker_token(pid: int | None = None) -> str:
    """``host:pid:start`` of a process; the start time tells a reused pid apart."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after "comm"


def worker_alive(token: str) -> bool | None:
    """Whether the worker behind ``token`` still runs; None when it ran on another host."""
    host, pid, start = token.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _start_time(int(pid)) == start


def recover_dead_workers(study: optuna.Study, retry: RetryStale, tokenless_dead: bool = False) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker process on this host is gone.

    This is the journal-storage counterpart of RDB heartbeats. Call it under the budget
    lock. A trial whose worker runs on another host is left alone (use an RDB storage
    with heartbeats for several machines). ``tokenless_dead``: a RUNNING trial without a
    worker token is dead too (true under an exclusive budget lock: live workers set their
    token before they release it).

    Returns:
        Numbers of the trials that were failed.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = trial.user_attrs.get(WORKER_ATTR)
        if token is None and not tokenless_dead or token is not None and worker_alive(token) is not False:
            continue
        try:  # public API only: tell by trial number (another worker may finish it first)
            frozen = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if frozen.state != TrialState.FAIL or frozen.datetime_complete is None:
            continue
        # A finished trial's own attrs are read-only through the public API: the reason is
        # a study attr keyed by trial number (read back by :func:`fail_reasons`).
        study.set_user_attr(f"{REASON_ATTR}.{trial.number}", f"worker {token} died")
        retry(study, frozen)
        failed.append(trial.number)
    return failed


def fail_reasons(study: optuna.Study, trials: list[FrozenTrial]) -> dict[int, str]:
    """Why each FAIL trial of ``trials`` failed: its own ``fail_reason`` attr, else the one a
    worker recorded on the study when it found the trial's worker dead."""
    return {
        t.number: t.user_attrs.get(REASON_ATTR) or study.user_attrs.get(f"{REASON_ATTR}.{t.number}", "")
        for t in trials
        if t.state == TrialState.FAIL
    }


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-queued (their retry stands in for them)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that use the budget: finished, running or queued, minus re-queued failures."""
    trials = study.get_trials(deepcopy=False, states=COUNTED)
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried]


# --------------------------------------------------------------------------- budget lock


class BudgetLock:
    """Serialises "count the trials, then start one" across the workers of one study.

    A file lock next to a journal or SQLite file, or a session advisory lock on
    PostgreSQL / MySQL (the server drops it when a worker dies), else no lock (with a
    warning). ``release`` may be called more than once.
    """

    def __init__(self, tune: TuneConfig) -> None:
        self.url = storage_url(tune)
        self.kind = storage_kind(self.url)
        self.name = tune.study_name
        self._fh = None
        self._conn = None
        self._engine = None
        if self.kind not in ("journal", "sqlite", "postgresql", "mysql"):
            warnings.warn(
                f"no budget lock for {self.kind} storages: workers may overshoot tune.n_trials", stacklevel=2
            )

    @property
    def exclusive(self) -> bool:
        """Whether holding the lock excludes every other worker of the study."""
        return self.kind in ("postgresql", "mysql") or self._lock_file() != ""

    def _lock_file(self) -> str:
        path = self.url if self.kind == "journal" else self.url.split(":///", 1)[-1]
        return (
            ""
            if path in ("", ":memory:") or self.kind not in ("journal", "sqlite")
            else f"{path}.budget.lock"
        )

    def acquire(self) -> None:
        if self.kind in ("journal", "sqlite"):
            lock_file = self._lock_file()
            if lock_file:
                Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(lock_file, "a")  # noqa: SIM115 (held across calls)
                fcntl.flock(self._fh, fcntl.LOCK_EX)
        elif self.kind in ("postgresql", "mysql"):
            import sqlalchemy

            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            self._conn = self._engine.connect()
            self._conn.execute(sqlalchemy.text(self._sql("lock")), {"k": self._key()})
            self._conn.commit()

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        if self._conn is not None:
            import sqlalchemy

            self._conn.execute(sqlalchemy.text(self._sql("unlock")), {"k": self._key()})
            self._conn.commit()
            self._conn.close()
            self._conn = None

    def _key(self) -> int | str:
        if self.kind == "postgresql":
            return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big", signed=True)
        return f"histoxai-{self.name}"[:64]

    def _sql(self, op: str) -> str:
        if self.kind == "postgresql":
            return {"lock": "SELECT pg_advisory_lock(:k)", "unlock": "SELECT pg_advisory_unlock(:k)"}[op]
        return {"lock": "SELECT GET_LOCK(:k, -1)", "unlock": "SELECT RELEASE_LOCK(:k)"}[op]

    def __enter__(self) -> BudgetLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------- worker loop


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    lock: BudgetLock,
    retry: RetryStale,
    sampler_for: Callable[[int], optuna.samplers.BaseSampler] | None = None,
) -> int:
    """Run trials of ``study`` in this process until ``n_trials`` are used across all workers.

    Queued trials (re-queued parameters of dead workers, or the space's ``enqueue``) run
    first. Each trial's creation happens under ``lock``, after counting, so the budget is
    exact with any number of workers; the lock is released as soon as the trial exists.
    A trial that raises is recorded as FAIL and the loop goes on.

    ``sampler_for(n)`` gives the sampler for trial number ``n`` (e.g. seeded with
    ``seed + n``): draws are then reproducible per trial and differ between workers,
    which would otherwise repeat each other's random draws.

    Returns:
        The number of trials this worker ran.
    """
    ran = 0
    token = worker_token()

    def locked_objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, token)
        lock.release()
        return objective(trial)

    while True:
        lock.acquire()
        try:
            recover_dead_workers(study, retry, tokenless_dead=lock.exclusive)
            with warnings.catch_warnings():  # RDB heartbeats (no-op for journal storage)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            counted = counted_trials(study)
            waiting = any(t.state == TrialState.WAITING for t in counted)
            if not waiting and len(counted) >= n_trials:
                break
            if sampler_for is not None:  # trial numbers are sequential; nobody else creates one now
                study.sampler = sampler_for(len(study.get_trials(deepcopy=False)))
            study.optimize(locked_objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            ran += 1
        finally:
            lock.release()
    return ran
