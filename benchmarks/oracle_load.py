"""The chief under load: N simulated workers against the real oracle server, and the
same workload against Optuna on PostgreSQL (#48).

No Keras training runs. Each simulated worker asks for a trial, reports a metric per
simulated epoch (``--epoch-seconds`` apart, with a heartbeat several times per lease),
and ends the trial, until the search ends. Workers live in ``--processes`` processes
of many threads each; at a seeded moment in the first three quarters of the run,
``--killed`` of the processes (so of the workers) are killed with SIGKILL mid-trial.
After ``--seconds`` the search drains as a finished search does: no new trials, the
killed workers' trials are taken back when their leases run out and run by others,
then every worker is told to stop.

Engines, each on loopback only:

* ``kerastuner``: the chief as ``kt-pipeline search --workers`` serves it
  (`kt_pipeline.parallel.serve_oracle`: leases, token, optional TLS), in its own
  process; each worker is KerasTuner's `OracleClient` on our worker channel
  (`kt_pipeline.parallel.worker_stub`), with our `TrialHeartbeat`. Draining sets the
  oracle's ``max_trials`` to the trials it has (SIGUSR1), as a search that reached
  them would be.
* ``optuna``: one study on `optuna.storages.RDBStorage` with heartbeats
  (``heartbeat_interval`` = lease / 5, ``grace_period`` = lease) and
  `RetryFailedTrialCallback`; each worker runs ``study.optimize(n_trials=1)`` in a
  loop. PostgreSQL (Debian's ``postgresql``) is started on a free loopback port and
  stopped at the end, unless ``--optuna-storage URL`` names a database.

The coordinator (the chief, or PostgreSQL) runs on the first core and the workers on
the others, as separate hosts would (``--no-pin``: all share every core).

One JSON line per engine: calls per second (a gRPC call to the chief, or a storage
call to the database) and their p50 / p99 latency in milliseconds while the load
runs, the coordinator's and the workers' CPU as a share of one core, trials
completed, **lost** (started, and not completed by the end of the drain or its time
limit: ``drain_seconds`` is null then), **completed twice**, lease expiries, and
whether each killed worker's trial was completed by another worker. Afterwards the
oracle's own records and ``results.csv`` (`kt_pipeline.results.write_results`) are
checked against what the workers did.

Usage::

    python benchmarks/oracle_load.py --workers 200 --seconds 60 [--engines kerastuner,optuna]
        [--killed 0.1] [--epoch-seconds 1] [--epochs 5] [--lease 10] [--tls]
        [--results benchmarks/results]

Appends to ``oracle_load.json`` and rewrites ``oracle_load.md`` in ``--results``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ENGINES = ("kerastuner", "optuna")
_TICKS = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------ the workload


def _groups(workers: int, processes: int) -> list[list[str]]:
    """Worker ids, dealt into `processes` processes."""
    processes = max(1, min(processes, workers))
    ids = [f"worker{i:04d}" for i in range(workers)]
    return [ids[p::processes] for p in range(processes)]


def _victims(
    groups: list[list[str]], *, share: float, seconds: float, seed: int
) -> list[tuple[int, float]]:
    """``(process index, seconds after the start)`` of each process to kill: at least
    one when `share` > 0, each at a seeded time between a quarter and three quarters
    of the run (mid-trial: a worker is between trials for a moment only)."""
    if share <= 0:
        return []
    rng = random.Random(seed)
    count = max(1, round(share * len(groups)))
    chosen = rng.sample(range(len(groups)), min(count, len(groups) - 1) or 1)
    return sorted(((p, rng.uniform(0.25, 0.75) * seconds) for p in chosen), key=lambda v: v[1])


class _EventLog:
    """One process's events, a JSON object per line, written as they happen so a
    killed process leaves everything up to its death. `last_code` is the outcome of
    the calling thread's latest call."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._local = threading.local()

    def write(self, **event: Any) -> None:
        line = json.dumps(event)
        with self._lock:
            self._file.write(line + "\n")

    def call(self, method: str, started: float, seconds: float, code: str) -> None:
        self._local.code = code
        self.write(ev="call", m=method, t=started, ms=seconds * 1000, code=code)

    def last_code(self) -> str | None:
        return getattr(self._local, "code", None)

    def timed(
        self, method: str, function: Callable[..., Any], code_of: Callable[[BaseException], str]
    ) -> Callable[..., Any]:
        """`function`, each call logged with its latency and outcome."""

        def call(*args: Any, **kwargs: Any) -> Any:
            started, clock = time.time(), time.perf_counter()
            code = "OK"
            try:
                return function(*args, **kwargs)
            except BaseException as error:
                code = code_of(error)
                raise
            finally:
                self.call(method, started, time.perf_counter() - clock, code)

        return call


def _wait_for_go() -> float:
    """Blocks until the driver writes a line to stdin (every process starts at once);
    returns the start time."""
    print("ready", flush=True)
    sys.stdin.readline()
    return time.time()


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc``)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _children(pid: int) -> list[int]:
    """`pid` and the processes whose parent it is (PostgreSQL's backends)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _pinned(cores: str) -> list[str]:
    """A command prefix that runs on `cores` (``taskset -c``); none when empty."""
    return ["taskset", "-c", cores] if cores else []


def _core_split() -> tuple[str, str]:
    """``(coordinator's cores, workers' cores)``: the first core for the chief or the
    database, as its own host would give it, the rest for the simulated workers, so
    their CPU does not stand in the coordinator's latency; no split on one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "", ""
    return str(cores[0]), ",".join(map(str, cores[1:]))


# ------------------------------------------------------------------- KerasTuner chief


def _space() -> Any:
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 16, 512)
    return hp


def _chief_role(args: argparse.Namespace) -> None:
    """The chief: the oracle served as `kt_pipeline.tuners` serves it for ``--workers``."""
    import keras_tuner

    from kt_pipeline import parallel
    from kt_pipeline._compat import apply

    apply()
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"),
        max_trials=10**6,
        hyperparameters=_space(),
        seed=args.seed,
    )
    oracle._set_project_dir(str(args.dir), "load")
    oracle.verbose = 0  # as the pipeline's chief without runtime.verbose

    def drain(*_: Any) -> None:  # a search whose last trial was handed out
        oracle.max_trials = len(oracle.trials)

    signal.signal(signal.SIGUSR1, drain)
    tls = None
    if os.environ.get(parallel.TLS_ENV["cert"]):
        read = parallel.oracle_tls(
            cert=os.environ[parallel.TLS_ENV["cert"]], key=os.environ[parallel.TLS_ENV["key"]]
        )
        tls = (read["key"], read["cert"])
    requeued = parallel.serve_oracle(
        oracle,
        address=args.address,
        lease_seconds=args.lease,
        token=os.environ.get(parallel.TOKEN_ENV),
        tls=tls,
    )
    (args.dir / "chief.json").write_text(json.dumps({"requeued": requeued}))


def _kerastuner_workers_role(args: argparse.Namespace) -> None:
    """Simulated workers, a thread each, through KerasTuner's `OracleClient` on our
    worker channel (token, worker id, TLS) with our lease heartbeat."""
    import grpc

    from kt_pipeline import parallel
    from kt_pipeline._compat import apply, oracle_client, trial_module

    log = _EventLog(args.log)

    def code_of(error: BaseException) -> str:
        return error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__

    class TimedStub:
        """The worker's stub, every call (and `with_call`) logged."""

        def __init__(self, stub: Any) -> None:
            self._stub = stub

        def __getattr__(self, name: str) -> Any:
            method = getattr(self._stub, name)
            timed = log.timed(name, method, code_of)
            timed.with_call = log.timed(name, method.with_call, code_of)  # type: ignore[attr-defined]
            return timed

    apply(worker_stub=lambda worker: TimedStub(parallel.worker_stub(worker)))
    clients = []
    for worker in args.ids.split(","):
        os.environ["KERASTUNER_TUNER_ID"] = worker
        clients.append(oracle_client.OracleClient(None))
    status = trial_module.TrialStatus
    interval = args.lease / parallel.HEARTBEATS_PER_LEASE

    def work(client: Any, rng: random.Random) -> None:
        pause = threading.Event()
        pause.wait(rng.uniform(0, args.epoch_seconds))  # workers out of step
        while True:
            trial = client.create_trial(client.tuner_id)
            if trial.status == status.STOPPED:
                return
            if trial.status == status.IDLE:
                continue
            log.write(ev="start", trial=trial.trial_id, w=client.tuner_id, t=time.time())
            with parallel.TrialHeartbeat(client.stub, trial.trial_id, interval=interval) as beat:
                for epoch in range(args.epochs):
                    pause.wait(args.epoch_seconds * rng.uniform(0.8, 1.2))  # "training"
                    client.update_trial(trial.trial_id, {"val_loss": rng.random()}, step=epoch)
                    if beat.lost.is_set():
                        break
            trial.status = status.COMPLETED
            client.end_trial(trial)
            log.write(ev="end", trial=trial.trial_id, w=client.tuner_id, t=time.time(),
                      ok=log.last_code() == "OK")  # fmt: skip

    _wait_for_go()
    threads = [
        threading.Thread(target=work, args=(c, random.Random(f"{args.seed}-{c.tuner_id}")))
        for c in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ---------------------------------------------------------------------- Optuna workers


def _optuna_workers_role(args: argparse.Namespace) -> None:
    """Simulated workers, a thread each, each running ``study.optimize(n_trials=1)``
    in a loop on a heartbeat-enabled `RDBStorage` that retries stale trials; after
    the deadline they run only trials queued for retry, until none runs."""
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    log = _EventLog(args.log)
    ids = args.ids.split(",")
    storage = RDBStorage(
        args.storage,
        engine_kwargs={"pool_size": len(ids), "max_overflow": len(ids) + 2}
        if args.storage.startswith("postgresql")
        else {},
        heartbeat_interval=max(1, round(args.lease / 5)),
        grace_period=max(1, round(args.lease)),
        heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=3),
    )
    for name in (
        "create_new_trial", "set_trial_param", "set_trial_state_values",
        "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
        "get_trial", "get_all_trials", "get_trial_id_from_study_id_trial_number",
        "record_heartbeat", "_get_stale_trial_ids", "get_best_trial",
    ):  # fmt: skip
        setattr(storage, name, log.timed(name, getattr(storage, name), lambda e: type(e).__name__))
    study = optuna.load_study(study_name="load", storage=storage)
    waiting = (optuna.trial.TrialState.WAITING,)
    running = (optuna.trial.TrialState.RUNNING,)

    def work(worker: str, rng: random.Random, deadline: float) -> None:
        pause = threading.Event()
        pause.wait(rng.uniform(0, args.epoch_seconds))

        def objective(trial: optuna.Trial) -> float:
            log.write(ev="start", trial=trial.number, w=worker, t=time.time())
            trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
            trial.suggest_int("units", 16, 512)
            value = 1.0
            for epoch in range(args.epochs):
                pause.wait(args.epoch_seconds * rng.uniform(0.8, 1.2))
                value = rng.random()
                trial.report(value, epoch)
            return value

        def one() -> None:
            before = len(ended)
            study.optimize(objective, n_trials=1, callbacks=[lambda s, t: ended.append(t)])
            if len(ended) > before:
                trial = ended[-1]
                log.write(ev="end", trial=trial.number, w=worker, t=time.time(),
                          ok=trial.state == optuna.trial.TrialState.COMPLETE)  # fmt: skip

        ended: list[Any] = []
        while time.time() < deadline:
            one()
        while True:  # the drain: retries only, until no trial runs
            optuna.storages.fail_stale_trials(study)
            if study.get_trials(deepcopy=False, states=waiting):
                one()
            elif study.get_trials(deepcopy=False, states=running):
                pause.wait(1.0)  # as a KerasTuner worker told to wait
            else:
                return

    start = _wait_for_go()
    threads = [
        threading.Thread(
            target=work, args=(w, random.Random(f"{args.seed}-{w}"), start + args.seconds)
        )
        for w in ids
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextlib.contextmanager
def _postgres(root: Path, *, connections: int, cores: str) -> Iterator[tuple[str, int]]:
    """A PostgreSQL server on a free loopback port for this run (Debian's
    ``postgresql`` package; as the ``postgres`` user when run as root; on `cores`): yields its
    SQLAlchemy URL and the postmaster's pid; stopped at the end."""
    initdb = shutil.which("initdb") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None
    )
    if initdb is None:
        raise SystemExit("oracle_load: the optuna engine needs PostgreSQL (apt install postgresql)")
    bindir = Path(initdb).resolve().parent
    from kt_pipeline.launcher import free_loopback_address

    data, port = root / "pg", int(free_loopback_address().rsplit(":", 1)[1])
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "postgres")
        root.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    options = f"-h 127.0.0.1 -p {port} -k {data} -c max_connections={connections}"
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(data / "log"),
        "-w",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "load")
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/load", postmaster
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")


# ------------------------------------------------------------------------ the driver


def _spawn(
    role: str, args: argparse.Namespace, env: dict[str, str], *extra: str, errors: Path
) -> subprocess.Popen[str]:
    """A worker process; its stderr (TensorFlow's start-up lines, warnings) goes to
    `errors`."""
    command = [*_pinned(args.worker_cores), sys.executable, __file__, "--role", role,
               "--lease", str(args.lease), "--epochs", str(args.epochs),
               "--epoch-seconds", str(args.epoch_seconds), "--seconds", str(args.seconds),
               "--seed", str(args.seed), *extra]  # fmt: skip
    with open(errors, "w", encoding="utf-8") as stderr:
        return subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True,
        )  # fmt: skip


def _load(
    args: argparse.Namespace,
    *,
    role: str,
    env: dict[str, str],
    root: Path,
    coordinator: Callable[[], list[int]],
    drain: Callable[[], None],
    await_coordinator: Callable[[float], bool],
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs the worker processes: all start at once, the victims are killed on time,
    `drain` is called after ``--seconds``, and `await_coordinator` (given the seconds
    left) says whether the search ended in time; returns the events and the figures
    measured while the load ran."""
    groups = _groups(args.workers, args.processes)
    victims = _victims(groups, share=args.killed, seconds=args.seconds, seed=args.seed)
    logs = [root / f"workers{p}.jsonl" for p in range(len(groups))]
    processes = [
        _spawn(
            role,
            args,
            env,
            "--ids",
            ",".join(ids),
            "--log",
            str(log),
            *extra,
            errors=log.with_suffix(".err"),
        )
        for ids, log in zip(groups, logs, strict=True)
    ]
    try:
        for process, log in zip(processes, logs, strict=True):  # connected, waiting
            if (process.stdout.readline() if process.stdout else "") != "ready\n":
                tail = log.with_suffix(".err").read_text().strip().splitlines()[-1:]
                raise SystemExit(f"oracle_load: a {role} process did not start: {tail}")
        pids = [process.pid for process in processes]
        started, cpu_before = time.time(), _cpu_seconds(coordinator())
        workers_before = _cpu_seconds(pids)
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        clock = threading.Event()
        killed: list[str] = []
        for index, at in victims:
            clock.wait(max(0.0, started + at - time.time()))
            workers_before -= _cpu_seconds([pids[index]])  # its CPU until now stays counted
            processes[index].kill()
            killed += groups[index]
        clock.wait(max(0.0, started + args.seconds - time.time()))
        drained_at, cpu_after = time.time(), _cpu_seconds(coordinator())
        workers_after = _cpu_seconds(pids)
        drain()
        limit = drained_at + 3 * args.lease + 3 * args.epochs * args.epoch_seconds + 60
        ended = await_coordinator(limit - time.time())
        for process in processes if ended else ():
            try:
                process.wait(timeout=max(1.0, limit - time.time()))
            except subprocess.TimeoutExpired:
                ended = False  # the workers did not finish the search in time
                break
        done_at = time.time()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    events = [event for log in logs for event in _read_events(log)]
    return {
        "events": events,
        "started": started,
        "drained_at": drained_at,
        "drain_seconds": done_at - drained_at if ended else None,
        "cpu_share": (cpu_after - cpu_before) / (drained_at - started),
        "workers_cpu_share": (workers_after - workers_before) / (drained_at - started),
        "killed": killed,
    }


def _read_events(log: Path) -> list[dict[str, Any]]:
    """A process's events; a killed process's last line may be cut short."""
    events = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def _figures(run: dict[str, Any]) -> dict[str, Any]:
    """Calls, latency and what happened to each trial, from the workers' own events."""
    calls = [e for e in run["events"] if e["ev"] == "call" and e["t"] < run["drained_at"]]
    latency = sorted(e["ms"] for e in calls)
    seconds = run["drained_at"] - run["started"]
    ends = [e for e in run["events"] if e["ev"] == "end"]
    completed = Counter(e["trial"] for e in ends if e["ok"])
    killed = set(run["killed"])
    # A killed worker's trial: the last one it started and never ended.
    open_by: dict[str, Any] = {}
    for event in sorted(run["events"], key=lambda e: e.get("t", 0)):
        if event["ev"] == "start":
            open_by[event["w"]] = event["trial"]
        elif event["ev"] == "end" and open_by.get(event["w"]) == event["trial"]:
            del open_by[event["w"]]
    orphaned = [trial for worker, trial in open_by.items() if worker in killed]
    return {
        "calls_per_second": round(len(calls) / seconds, 1),
        "p50_ms": round(statistics.median(latency), 2) if latency else None,
        "p99_ms": round(latency[min(len(latency) - 1, math.ceil(0.99 * len(latency)) - 1)], 2)
        if latency
        else None,
        "call_errors": dict(Counter(e["code"] for e in calls if e["code"] != "OK")),
        "coordinator_cpu_share": round(run["cpu_share"], 3),
        # The simulated workers' own CPU: at 1.0 on one core, their client code, not the
        # coordinator, sets the latency.
        "workers_cpu_share": round(run["workers_cpu_share"], 3),
        # None: the search did not end within the limit after the load stopped.
        "drain_seconds": None if run["drain_seconds"] is None else round(run["drain_seconds"], 1),
        "killed_workers": len(killed),
        "completed_by_workers": completed,
        "orphaned": orphaned,
    }


def run_kerastuner(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The workload against the pipeline's chief; checks its records afterwards."""
    from kt_pipeline import parallel
    from kt_pipeline.launcher import free_loopback_address
    from kt_pipeline.results import load_trials, write_results

    address = free_loopback_address()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        parallel.TOKEN_ENV: secrets.token_hex(16),
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": address.rsplit(":", 1)[1],
    }
    if args.tls:
        cert, key = root / "chief.pem", root / "chief.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
             "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        env.update({parallel.TLS_ENV["cert"]: str(cert), parallel.TLS_ENV["key"]: str(key),
                    parallel.TLS_ENV["ca"]: str(cert)})  # fmt: skip
    project = root / "search"
    project.mkdir()
    with open(root / "chief.err", "w", encoding="utf-8") as stderr:
        chief = subprocess.Popen(
            [*_pinned(args.coordinator_cores), sys.executable, __file__, "--role", "chief",
             "--address", address, "--dir", str(project), "--lease", str(args.lease),
             "--seed", str(args.seed)],
            env={**env, "KERASTUNER_TUNER_ID": "chief"}, stderr=stderr,
        )  # fmt: skip
    try:

        def await_chief(seconds: float) -> bool:
            try:
                chief.wait(timeout=max(0.1, seconds))
            except subprocess.TimeoutExpired:
                chief.terminate()
                chief.wait(timeout=30)
                return False
            return True

        run = _load(
            args,
            role="kerastuner-workers",
            env=env,
            root=root,
            coordinator=lambda: [chief.pid],
            drain=lambda: chief.send_signal(signal.SIGUSR1),
            await_coordinator=await_chief,
        )
    finally:
        if chief.poll() is None:
            chief.kill()
    chief_log = (root / "chief.err").read_text()
    if chief.returncode != 0 and run["drain_seconds"] is not None:
        tail = chief_log.strip().splitlines()[-1:]
        raise SystemExit(f"oracle_load: the chief exited {chief.returncode}: {tail}")
    figures = _figures(run)
    folder = project / "load"
    trials = load_trials(folder)
    table = write_results(folder, root / "results.csv")
    oracle = json.loads((folder / "oracle.json").read_text())
    finished = project / "chief.json"  # else the chief was stopped: count its log's lines
    requeued = (
        len(json.loads(finished.read_text())["requeued"])
        if finished.exists()
        else chief_log.count("presumed dead")
    )
    completed, orphaned = figures.pop("completed_by_workers"), figures.pop("orphaned")
    done = {t for t, trial in trials.items() if trial.status == "COMPLETED"}
    others = {e["trial"] for e in run["events"] if e["ev"] == "end" and e["ok"]
              and e["w"] not in run["killed"]}  # fmt: skip
    return {
        **figures,
        "trials_completed": len(done),
        "trials_lost": len(set(trials) - done),
        "trials_completed_twice": sum(n > 1 for n in completed.values())
        + sum(n > 1 for n in Counter(oracle["end_order"]).values()),
        "lease_expiries": requeued,
        "killed_trials_completed_by_another": f"{len(set(orphaned) & others)}/{len(orphaned)}",
        "records_agree": set(completed) == done
        and set(table["trial_id"].astype(str)) == set(trials)
        and set(table.loc[table["status"] == "COMPLETED", "trial_id"].astype(str)) == done,
    }


def run_optuna(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The same workload against Optuna's RDBStorage; checks the study afterwards."""
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    groups = len(_groups(args.workers, args.processes))
    with contextlib.ExitStack() as stack:
        if args.optuna_storage:
            url, coordinator = args.optuna_storage, lambda: []
        else:
            url, postmaster = stack.enter_context(
                _postgres(
                    root,
                    connections=2 * args.workers + 4 * groups + 20,
                    cores=args.coordinator_cores,
                )
            )
            coordinator = lambda: _children(postmaster)  # noqa: E731
        optuna.create_study(
            study_name="load", storage=url, direction="minimize",
            sampler=optuna.samplers.RandomSampler(seed=args.seed),
        )  # fmt: skip
        run = _load(
            args,
            role="optuna-workers",
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            root=root,
            coordinator=coordinator,
            drain=lambda: None,  # the workers know the deadline
            await_coordinator=lambda _seconds: True,  # the workers end when the study does
            extra=("--storage", url),
        )
        trials = optuna.load_study(study_name="load", storage=url).get_trials(deepcopy=False)
        (root / "trials.json").write_text(  # the study's own record, for --keep
            json.dumps([{"number": t.number, "state": t.state.name,
                         "retried": t.system_attrs.get("failed_trial")} for t in trials])
        )  # fmt: skip
    figures = _figures(run)
    completed = figures.pop("completed_by_workers")
    state = optuna.trial.TrialState

    def origin(trial: Any) -> int:
        with warnings.catch_warnings(
            action="ignore", category=optuna.exceptions.ExperimentalWarning
        ):
            first = RetryFailedTrialCallback.retried_trial_number(trial)
        return int(trial.number if first is None else first)

    done = Counter(origin(t) for t in trials if t.state == state.COMPLETE)
    started = {origin(t) for t in trials}
    orphaned = figures.pop("orphaned")
    return {
        **figures,
        "trials_completed": sum(done.values()),
        "trials_lost": len(started - set(done)),
        "trials_completed_twice": sum(n > 1 for n in done.values()),
        "lease_expiries": sum(t.state == state.FAIL for t in trials),
        "killed_trials_completed_by_another": f"{sum(t in done for t in orphaned)}/{len(orphaned)}",
        "records_agree": set(completed) == {t.number for t in trials if t.state == state.COMPLETE},
    }


# --------------------------------------------------------------------------- main


def _write(results: Path, lines: list[dict[str, Any]]) -> None:
    """Adds `lines` to ``oracle_load.json`` (a run replaces an earlier one of the same
    engine and workload) and rewrites the table in ``oracle_load.md``."""
    path = results / "oracle_load.json"
    keys = ("engine", "workers", "seconds", "killed", "tls", "epoch_seconds", "lease",
            "coordinator_cores")  # fmt: skip
    kept = json.loads(path.read_text()) if path.exists() else []
    new = {tuple(line[k] for k in keys) for line in lines}
    rows = [r for r in kept if tuple(r.get(k) for k in keys) not in new] + lines
    rows.sort(key=lambda r: (r["workers"], r["engine"], r["tls"]))
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    columns = ("workers", "engine", "tls", "coordinator_cores", "calls_per_second", "p50_ms",
               "p99_ms", "coordinator_cpu_share", "workers_cpu_share", "trials_completed",
               "trials_lost", "trials_completed_twice", "lease_expiries",
               "killed_trials_completed_by_another",
               "records_agree", "drain_seconds", "commit")  # fmt: skip
    table = [
        "# The chief under load (`benchmarks/oracle_load.py`)",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
        *("| " + " | ".join(str(r.get(c)) for c in columns) + " |" for r in rows),
    ]
    (results / "oracle_load.md").write_text("\n".join(table) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--killed", type=float, default=0.1, help="share of the workers")
    parser.add_argument("--epoch-seconds", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    parser.add_argument("--lease", type=float, default=10.0, help="worker lease, seconds")
    parser.add_argument("--processes", type=int, default=10, help="worker processes")
    parser.add_argument("--tls", action="store_true", help="the chief serves TLS")
    parser.add_argument(
        "--no-pin", action="store_true", help="the coordinator shares the workers' cores"
    )
    parser.add_argument("--optuna-storage", default="", help="a database URL instead of PostgreSQL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--keep", type=Path, help="keep each engine's run folder under here")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    roles = {"chief": _chief_role, "kerastuner-workers": _kerastuner_workers_role,
             "optuna-workers": _optuna_workers_role}  # fmt: skip
    if args.role:
        roles[args.role](args)
        return
    # Stopped from outside, still stop PostgreSQL and the processes (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    args.coordinator_cores, args.worker_cores = ("", "") if args.no_pin else _core_split()
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"--engines: unknown {unknown[0]!r} (known: {', '.join(ENGINES)})")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT))
    from real_table_quality import code_version

    version = code_version()
    commit = (
        version["commit"] + ("+dirty" if version["dirty"] else "") if version["commit"] else None
    )
    lines = []
    for engine in engines:
        with tempfile.TemporaryDirectory(prefix="oracle_load_") as folder:
            figures = (run_kerastuner if engine == "kerastuner" else run_optuna)(args, Path(folder))
            if args.keep:
                shutil.copytree(folder, args.keep / engine, dirs_exist_ok=True, symlinks=True)
        line = {"engine": engine, "workers": args.workers, "seconds": args.seconds,
                "killed": args.killed, "tls": args.tls and engine == "kerastuner",
                "epoch_seconds": args.epoch_seconds, "epochs": args.epochs, "lease": args.lease,
                "processes": min(args.processes, args.workers),
                "coordinator_cores": args.coordinator_cores or "shared", **figures,
                "commit": commit, "cpus": os.cpu_count()}  # fmt: skip
        print(json.dumps(line), flush=True)
        lines.append(line)
    if args.results:
        _write(args.results, lines)


if __name__ == "__main__":
    main()
