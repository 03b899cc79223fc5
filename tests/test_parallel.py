"""Parallel trials: KerasTuner's chief/worker mode with worker leases."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import keras_tuner
import pandas as pd
import pytest
from conftest import make_frame, random_search_args, stalling_env
from keras_tuner.src import protos
from keras_tuner.src.engine import trial as trial_module

from kt_pipeline.launcher import cpu_shares, worker_environment
from kt_pipeline.parallel import (
    LEASE_METADATA,
    TOKEN_ENV,
    WORKER_METADATA,
    LeasingOracleServicer,
    StopWhenTakenBack,
    TrialHeartbeat,
    TrialTakenBack,
    oracle_server,
    oracle_stub,
)

_TESTS = Path(__file__).parent


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _oracle(tmp_path: Path, max_trials: int) -> keras_tuner.Oracle:
    hp = keras_tuner.HyperParameters()
    hp.Float("rate", 1e-3, 1e-1, sampling="log")
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("score", "max"),
        max_trials=max_trials,
        hyperparameters=hp,
        seed=1,
    )
    oracle._set_project_dir(str(tmp_path), "search")
    return oracle


class _Aborted(Exception):
    pass


class _Context:
    """What a servicer sees of a call: the worker it names, and `abort`, which ends it
    with a status code."""

    def __init__(self, worker: str | None = None) -> None:
        self._metadata = [(WORKER_METADATA, worker)] if worker else []

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = dict(metadata)

    def abort(self, code: Any, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted(details)


def _create(servicer: LeasingOracleServicer, tuner_id: str) -> trial_module.Trial:
    request = protos.get_service().CreateTrialRequest(tuner_id=tuner_id)
    return trial_module.Trial.from_proto(servicer.CreateTrial(request, _Context(tuner_id)).trial)


def _heartbeat(servicer: LeasingOracleServicer, trial_id: str, worker: str) -> None:
    request = protos.get_service().GetTrialRequest(trial_id=trial_id)
    servicer.GetTrial(request, _Context(worker))


def test_a_silent_worker_loses_its_trial_to_the_next_worker(tmp_path: Path) -> None:
    clock = _Clock()
    oracle = _oracle(tmp_path, max_trials=3)
    servicer = LeasingOracleServicer(oracle, lease_seconds=10, clock=clock)
    lost = _create(servicer, "worker0")
    alive = _create(servicer, "worker1")
    clock.now += 6
    _heartbeat(servicer, alive.trial_id, "worker1")  # worker1 keeps its lease, worker0 is silent
    assert servicer.reap() == []
    clock.now += 6
    assert servicer.reap() == [(lost.trial_id, "worker0")]
    assert set(oracle.tuner_ids) == {"worker1"}
    assert list(oracle.ongoing_trials) == ["worker1"]

    again = _create(servicer, "worker2")
    assert again.trial_id == lost.trial_id
    assert again.hyperparameters.values == lost.hyperparameters.values
    assert oracle.ongoing_trials["worker2"].trial_id == lost.trial_id


def test_a_worker_is_told_to_wait_not_stop_while_a_trial_may_come_back(
    tmp_path: Path,
) -> None:
    clock = _Clock()
    oracle = _oracle(tmp_path, max_trials=1)
    servicer = LeasingOracleServicer(oracle, lease_seconds=10, clock=clock)
    running = _create(servicer, "worker0")
    # Plain KerasTuner would answer STOPPED here: max_trials is reached.
    held = _create(servicer, "worker1")
    assert held.status == trial_module.TrialStatus.IDLE
    assert not servicer.stop_triggered
    clock.now += 11
    assert _create(servicer, "worker1").status == trial_module.TrialStatus.IDLE  # polls on
    assert servicer.reap() == [(running.trial_id, "worker0")]
    assert _create(servicer, "worker1").trial_id == running.trial_id


class _NeverHolding(LeasingOracleServicer):
    def wait(self, timeout: float) -> None:
        raise AssertionError("a trial request held one of the chief's threads")


def test_the_chief_answers_wait_at_once_and_keeps_its_threads(tmp_path: Path) -> None:
    """A worker with nothing to do is told to wait (IDLE) without the request being held
    in the chief: with more idle workers than server threads, held requests kept the
    heartbeats of the workers still training from the chief past their leases, and
    their trials were taken back again and again (`benchmarks/oracle_load.py`, 200
    workers)."""
    oracle = _oracle(tmp_path, max_trials=1)
    servicer = _NeverHolding(oracle, lease_seconds=10, clock=_Clock())
    running = _create(servicer, "worker0")
    assert _create(servicer, "worker1").status == trial_module.TrialStatus.IDLE
    assert oracle.ongoing_trials["worker0"].trial_id == running.trial_id


def test_the_chief_writes_a_running_trials_reports_every_few_seconds_not_each(
    tmp_path: Path,
) -> None:
    """KerasTuner's oracle writes a trial's file on every epoch's report, under its
    lock; the chief's writes a running trial's file when it starts, then at most every
    `seconds`, and at once when it ends."""
    from kt_pipeline._compat import write_running_trials_every

    clock = _Clock()
    oracle = _oracle(tmp_path, max_trials=1)
    write_running_trials_every(oracle, 10, clock=clock)
    trial = oracle.create_trial("worker0")
    path = Path(oracle._get_trial_dir(trial.trial_id)) / "trial.json"

    def reports() -> list[float]:
        history = json.loads(path.read_text())["metrics"]["metrics"].get("score", {})
        return [o["value"][0] for o in history.get("observations", [])]

    assert reports() == []  # written when it started
    oracle.update_trial(trial.trial_id, {"score": 0.1}, step=0)
    clock.now += 9
    oracle.update_trial(trial.trial_id, {"score": 0.2}, step=1)
    assert reports() == []  # KerasTuner's would hold both
    clock.now += 1
    oracle.update_trial(trial.trial_id, {"score": 0.3}, step=2)
    assert reports() == [0.1, 0.2, 0.3]
    oracle.update_trial(trial.trial_id, {"score": 0.4}, step=3)
    trial.status = trial_module.TrialStatus.COMPLETED
    oracle.end_trial(trial)
    assert reports() == [0.1, 0.2, 0.3, 0.4]
    assert json.loads(path.read_text())["status"] == "COMPLETED"


def test_the_chief_writes_the_oracles_state_at_most_every_so_often(tmp_path: Path) -> None:
    """KerasTuner's oracle writes its whole state on every trial's start and end; the
    chief's only notes the change, and `flush` writes it when it changed and enough
    time has passed, or at once when asked to (as the chief does when it stops)."""
    from kt_pipeline._compat import defer_oracle_saves

    clock = _Clock()
    oracle = _oracle(tmp_path, max_trials=3)
    flush = defer_oracle_saves(oracle)
    path = Path(oracle._get_oracle_fname())

    def started() -> list[str]:
        return list(json.loads(path.read_text())["start_order"]) if path.exists() else []

    first = oracle.create_trial("worker0")
    assert started() == []  # KerasTuner's would have written it
    flush(every=1.0, clock=clock)
    assert started() == [first.trial_id]
    second = oracle.create_trial("worker1")
    flush(every=1.0, clock=clock)
    assert started() == [first.trial_id]  # not a second yet
    clock.now += 1
    flush(every=1.0, clock=clock)
    assert started() == [first.trial_id, second.trial_id]
    path.unlink()
    clock.now += 5
    flush(every=1.0, clock=clock)
    assert not path.exists()  # nothing changed: nothing written
    oracle.create_trial("worker2")
    flush()
    assert len(started()) == 3


class _RecordingStub:
    """A chief that answers heartbeats, saying the trial is leased to the caller until
    `take_back` is set."""

    def __init__(self, wanted: int) -> None:
        self.trial_ids: list[str] = []
        self.enough = threading.Event()
        self.take_back = threading.Event()
        self._wanted = wanted
        self.GetTrial = self  # the multi-callable: `stub.GetTrial.with_call(...)`

    def with_call(self, request: Any, timeout: float) -> tuple[None, Any]:
        self.trial_ids.append(request.trial_id)
        if len(self.trial_ids) >= self._wanted:
            self.enough.set()
        leased = "no" if self.take_back.is_set() else "yes"

        class Call:
            def trailing_metadata(self) -> Any:
                return ((LEASE_METADATA, leased),)

        return None, Call()


def test_the_heartbeat_renews_the_lease_from_its_own_thread() -> None:
    stub = _RecordingStub(wanted=3)
    with TrialHeartbeat(stub, "07", interval=0.01) as heartbeat:
        assert stub.enough.wait(timeout=10)
    count = len(stub.trial_ids)
    assert set(stub.trial_ids) == {"07"}
    assert not any(t.name == "heartbeat-07" for t in threading.enumerate())
    assert len(stub.trial_ids) == count  # stopped means stopped
    assert not heartbeat.lost.is_set()


def test_a_worker_stops_training_a_trial_the_chief_took_back() -> None:
    """The heartbeat hears that the trial is no longer leased to this worker, and the
    next training step ends the trial before another checkpoint is written."""
    stub = _RecordingStub(wanted=1)
    with TrialHeartbeat(stub, "07", interval=0.01) as heartbeat:
        stop = StopWhenTakenBack(lambda: heartbeat)
        stop.on_train_batch_end(0)  # still ours: trains on
        stub.take_back.set()
        assert heartbeat.lost.wait(timeout=10)
        with pytest.raises(TrialTakenBack, match="trial 07 was taken back"):
            stop.on_train_batch_end(1)
    StopWhenTakenBack(lambda: None).on_train_batch_end(2)  # between trials: nothing to stop


def test_workers_get_their_own_cpus_or_gpu() -> None:
    assert cpu_shares(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert cpu_shares(3, [0]) == [[0], [0], [0]]
    assert worker_environment(1, gpus=["0", "1"], cpus=None) == {"CUDA_VISIBLE_DEVICES": "1"}
    env = worker_environment(0, gpus=[], cpus=[2, 3])
    assert env["CUDA_VISIBLE_DEVICES"] == "-1"
    assert env["TF_NUM_INTRAOP_THREADS"] == env["OMP_NUM_THREADS"] == "2"


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    """Polls until `path` exists; fails if `process` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the search ended before any worker stalled"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


def _stalling_search(
    tmp_path: Path, *, flags: tuple[str, ...] = ()
) -> tuple[Path, Path, dict[str, str], list[str]]:
    """A 3-trial search whose first trial to start training, in any process, stalls
    until killed (`custom_models.StallingHyperModel`): its experiment folder, the file
    the stalled process writes, the environment and the ``kt-pipeline`` arguments."""
    data = tmp_path / "data.csv"
    make_frame(120).to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    stall = tmp_path / "stalled.json"
    env = stalling_env(stall)
    args = random_search_args(
        experiment,
        data,
        max_trials=3,
        max_epochs=2,
        flags=flags,
        overrides=(
            "search.hypermodel='custom_models:StallingHyperModel'",
            "search.units=[8]",
            "search.num_layers=1",
            "search.batch_sizes=[16]",
            "runtime.worker_lease_seconds=4",
        ),
    )
    return experiment, stall, env, args


@pytest.mark.slow
def test_a_killed_worker_and_forged_calls_do_not_break_a_search_over_tls(
    tmp_path: Path,
) -> None:
    """`--workers 2` on loopback, with a token and TLS. The first worker to start
    training writes the trial's hyperparameters and stalls. While it does, strangers
    and a token holder with forged content call the chief and are refused; then the
    stalled worker is killed with SIGKILL. The chief must still finish every planned
    trial exactly once (the killed one by the other worker), export and exit 0."""

    from kt_pipeline.launcher import free_loopback_address

    cert, key = _self_signed(tmp_path)
    address = free_loopback_address()
    flags = ("--workers", "2", "--oracle", address, "--oracle-tls-cert", str(cert))
    flags += ("--oracle-tls-key", str(key), "--oracle-tls-ca", str(cert))
    experiment, stall, env, args = _stalling_search(tmp_path, flags=flags)
    env[TOKEN_ENV] = token = "the-token-of-this-search"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "kt_pipeline", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(stall, launcher, timeout=120)
        stalled = json.loads(stall.read_text())
        _forge_calls(experiment, address, token, cert.read_bytes(), stalled)
        os.kill(stalled["pid"], signal.SIGKILL)
        output, _ = launcher.communicate(timeout=150)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    assert launcher.returncode == 0, output[-3000:]
    assert f"worker {stalled['worker']} sent nothing for 4 s: presumed dead" in output

    table = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert len(table) == 3 and table["trial_id"].is_unique
    assert (table["status"] == "COMPLETED").all()
    # The killed trial is the one with the stalled hyperparameters (a sampled float
    # such as the learning rate does not repeat across trials): `learning_rate`, or
    # `<optimizer>_learning_rate` where the range test gave the optimizer its own range.
    rate = next(name for name in stalled["hyperparameters"] if name.endswith("learning_rate"))
    redone = table[table[rate] == stalled["hyperparameters"][rate]]
    assert len(redone) == 1
    row = redone.iloc[0]
    assert row["worker"] != stalled["worker"]
    assert row["epochs"] == 2  # trained to the end
    for name, value in stalled["hyperparameters"].items():
        if name in table.columns and not pd.isna(row[name]):
            # A column that is empty in some trials (a conditional hyperparameter)
            # reads back as floats, so numbers compare as numbers.
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            assert (float(row[name]) == value) if numeric else str(row[name]) == str(value), name
    trial_logs = {p.name for p in (experiment / "tensorboard").iterdir()} - {"search"}
    assert trial_logs == set(table["trial_id"])
    assert (experiment / "export" / "1" / "saved_model.pb").is_file()
    import tensorflow as tf

    assert callable(tf.saved_model.load(str(experiment / "export" / "1")).serve)


def _forge_calls(
    experiment: Path, address: str, token: str, ca: bytes, stalled: dict[str, Any]
) -> None:
    """Calls the running chief as a stranger and as a token holder with forged content;
    every call must be refused with its status code, and the stalled trial stay as it was."""
    import grpc

    service = protos.get_service()
    running = [
        trial_module.Trial.load(str(path)) for path in experiment.glob("search/trial_*/trial.json")
    ]
    rate = next(name for name in stalled["hyperparameters"] if name.endswith("learning_rate"))
    running = [
        trial
        for trial in running
        if trial.status == "RUNNING"
        and trial.hyperparameters.values.get(rate) == stalled["hyperparameters"][rate]
    ]
    assert len(running) == 1, "the stalled trial is saved as running"
    trial = running[0]

    def code(stub: Any, method: str, request: Any, says: str = "") -> Any:
        with pytest.raises(grpc.RpcError) as refused:
            getattr(stub, method)(request, timeout=10)
        assert says in refused.value.details()
        return refused.value.code()

    end = service.EndTrialRequest(trial=copy_trial(trial, status="COMPLETED").to_proto())
    calls = [
        ("GetSpace", service.GetSpaceRequest()),
        (
            "UpdateSpace",
            service.UpdateSpaceRequest(hyperparameters=trial.hyperparameters.to_proto()),
        ),
        ("CreateTrial", service.CreateTrialRequest(tuner_id="intruder")),
        ("UpdateTrial", service.UpdateTrialRequest(trial_id=trial.trial_id, metrics={"x": 1.0})),
        ("EndTrial", end),
        ("GetTrial", service.GetTrialRequest(trial_id=trial.trial_id)),
        ("GetBestTrials", service.GetBestTrialsRequest(num_trials=1)),
    ]
    in_clear = oracle_stub(address, token, worker="intruder")  # the chief serves TLS only
    assert code(in_clear, "GetSpace", service.GetSpaceRequest()) == grpc.StatusCode.UNAVAILABLE
    stranger = oracle_stub(address, "not-the-token", worker="intruder", tls_ca=ca)
    for method, request in calls:
        assert code(stranger, method, request) == grpc.StatusCode.UNAUTHENTICATED, method

    intruder = oracle_stub(address, token, worker="intruder", tls_ca=ca)
    denied, invalid = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT
    assert code(intruder, "EndTrial", end) == denied  # not leased to the caller
    report = service.UpdateTrialRequest(trial_id=trial.trial_id, metrics={"val_loss": 0.0})
    assert code(intruder, "UpdateTrial", report) == denied
    made_up = copy_trial(trial, status="COMPLETED")
    made_up.trial_id = "9999"
    unknown = service.EndTrialRequest(trial=made_up.to_proto())
    assert code(intruder, "EndTrial", unknown) == grpc.StatusCode.NOT_FOUND
    as_chief = service.CreateTrialRequest(tuner_id="chief")
    assert code(intruder, "CreateTrial", as_chief) == invalid
    # Even in the stalled worker's name: no objective, other hyperparameters, no end.
    impostor = oracle_stub(address, token, worker=stalled["worker"], tls_ca=ca)
    assert code(impostor, "UpdateTrial", report, "report has no") == invalid
    other = copy_trial(trial, status="COMPLETED")
    other.hyperparameters.values[rate] *= 2
    changed = service.EndTrialRequest(trial=other.to_proto())
    assert code(impostor, "EndTrial", changed, "came back with other hyperparameters") == invalid
    not_an_end = service.EndTrialRequest(trial=copy_trial(trial, status="RUNNING").to_proto())
    assert code(impostor, "EndTrial", not_an_end) == invalid
    assert (
        trial_module.Trial.load(
            str(experiment / "search" / f"trial_{trial.trial_id}" / "trial.json")
        ).status
        == "RUNNING"
    )


def _chief_pid(experiment: Path) -> int:
    """The process serving as the chief of the search in `experiment`."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        named = any(str(experiment).encode() in arg for arg in argv)
        if named and b"--role" in argv and argv[argv.index(b"--role") + 1] == b"chief":
            return int(proc.name)
    raise AssertionError(f"no chief process for {experiment}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_killed_chief_is_named_in_one_line_and_the_same_command_resumes(
    tmp_path: Path,
) -> None:
    """`--workers 2`: while a worker is mid-trial, the chief gets SIGKILL. The launcher
    says so in one line, stops the workers and exits 128 + 9; the same command again
    completes every planned trial once."""
    experiment, stall, env, args = _stalling_search(tmp_path, flags=("--workers", "2"))
    command = [sys.executable, "-m", "kt_pipeline", *args]
    launcher = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a failure below can stop every process it started
    )
    try:
        _wait_for(stall, launcher, timeout=120)
        os.kill(_chief_pid(experiment), signal.SIGKILL)
        output, _ = launcher.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    assert launcher.returncode == 128 + signal.SIGKILL, output[-3000:]
    said = [line for line in output.splitlines() if "chief was killed" in line]
    assert len(said) == 1 and "killed by SIGKILL" in said[0], output[-3000:]
    assert "--workers 2" in said[0] and "resumes it" in said[0]
    assert not _alive(json.loads(stall.read_text())["pid"])  # no worker left behind

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    table = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert len(table) == 3 and table["trial_id"].is_unique
    assert (table["status"] == "COMPLETED").all()
    assert (table["epochs"] == 2).all()
    assert (experiment / "export" / "1" / "saved_model.pb").is_file()


class _Namespaces:
    """Network namespaces standing in for hosts: the chief's and one per worker, each
    worker joined to the chief by its own veth pair on a private /30. Removed on exit."""

    def __init__(self, workers: int) -> None:
        self.prefix = f"ktp{os.getpid() % 100000}"
        self.chief = f"{self.prefix}c"
        self.workers = [f"{self.prefix}w{i}" for i in range(workers)]
        self.chief_addresses: list[str] = []

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def __enter__(self) -> _Namespaces:
        try:
            for name in [self.chief, *self.workers]:
                self._ip("netns", "add", name)
                self._ip("-n", name, "link", "set", "lo", "up")
            for index, worker in enumerate(self.workers):
                left, right = f"{self.prefix}a{index}", f"{self.prefix}b{index}"
                self._ip("link", "add", left, "type", "veth", "peer", "name", right)
                self._ip("link", "set", left, "netns", self.chief)
                self._ip("link", "set", right, "netns", worker)
                chief_ip, worker_ip = f"10.213.{index}.1", f"10.213.{index}.2"
                self._ip("-n", self.chief, "addr", "add", f"{chief_ip}/30", "dev", left)
                self._ip("-n", worker, "addr", "add", f"{worker_ip}/30", "dev", right)
                self._ip("-n", self.chief, "link", "set", left, "up")
                self._ip("-n", worker, "link", "set", right, "up")
                self.chief_addresses.append(chief_ip)
        except (OSError, subprocess.SubprocessError) as error:
            self.__exit__(None, None, None)
            pytest.skip(f"network namespaces cannot be made here: {error}")
        return self

    def __exit__(self, *_: object) -> None:
        for name in [self.chief, *self.workers]:  # deleting a namespace removes its veths
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)

    def command(self, namespace: str, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, sys.executable, "-m", "kt_pipeline", *args]


@pytest.mark.slow
def test_workers_on_other_hosts_dial_the_chief_and_survive_a_killed_worker(
    tmp_path: Path,
) -> None:
    """Three "hosts" (network namespaces) share only the experiment directory, as hosts
    share a network file system: the chief binds its namespace's interfaces, each worker
    dials the chief's address on its own link, and no loopback is shared. The first
    worker to train stalls and is killed; every trial still completes, and the chief
    exports and exits by itself."""
    experiment, stall, env, search = _stalling_search(tmp_path)
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    env[TOKEN_ENV] = "a-shared-secret-for-this-test"  # the chief binds beyond loopback
    port = "8470"
    with _Namespaces(workers=2) as hosts:
        # The chief binds every interface of its "host"; workers dial its link address.
        chief = [*search, "--role", "chief", "--oracle-bind", f"0.0.0.0:{port}"]
        chief += ["--oracle", f"{hosts.chief_addresses[0]}:{port}"]
        processes = [
            subprocess.Popen(
                hosts.command(hosts.chief, chief),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        ]
        try:
            for index, worker in enumerate(hosts.workers):
                address = f"{hosts.chief_addresses[index]}:{port}"
                args = [*search, "--role", "worker", "--worker-id", worker, "--oracle", address]
                processes.append(
                    subprocess.Popen(
                        hosts.command(worker, args),
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            _wait_for(stall, processes[0], timeout=180)
            os.kill(json.loads(stall.read_text())["pid"], signal.SIGKILL)
            output, _ = processes[0].communicate(timeout=180)
        finally:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert processes[0].returncode == 0, output[-3000:]
    assert "presumed dead" in output
    table = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert len(table) == 3 and (table["status"] == "COMPLETED").all()
    assert set(table["worker"]) <= set(hosts.workers)  # trials ran in the worker namespaces
    assert (experiment / "export" / "1" / "saved_model.pb").is_file()


def test_the_compose_file_runs_valid_commands_on_one_volume() -> None:
    """The compose file cannot run here (no Docker engine); its kt-pipeline commands
    are parsed by the real CLI parser, and the roles must fit together."""
    from kt_pipeline.cli import _parser

    text = (_TESTS.parent / "examples" / "compose.yaml").read_text()
    commands = [
        json.loads(match)
        for match in re.findall(r"command: (\[.*?\])", text.replace("\n", " "), re.S)
    ]
    searches = [_parser().parse_args(command) for command in commands if command[0] == "search"]
    roles = [args.role for args in searches]
    assert roles.count("chief") == 1 and roles.count("worker") >= 2
    chief = searches[roles.index("chief")]
    port = chief.oracle.rpartition(":")[2]
    for args in searches:
        assert args.experiment_dir == chief.experiment_dir
        assert (args.tuner, args.max_trials) == (chief.tuner, chief.max_trials)
        if args.role == "worker":
            assert args.oracle == f"chief:{port}"
    worker_ids = [args.worker_id for args in searches if args.role == "worker"]
    assert len(set(worker_ids)) == len(worker_ids)
    assert f'--logdir", "{chief.experiment_dir}/tensorboard' in text
    assert "127.0.0.1:6006:6006" in text  # TensorBoard published on loopback only


def _self_signed(folder: Path, name: str = "chief") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, made here for the test: its
    certificate file (also the workers' CA) and its key file."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_over_tls_only_workers_that_trust_the_chiefs_certificate_get_in(
    tmp_path: Path,
) -> None:
    import grpc

    from kt_pipeline.errors import UserInputError
    from kt_pipeline.launcher import free_loopback_address
    from kt_pipeline.parallel import wait_for_chief

    cert, key = _self_signed(tmp_path)
    other_ca, _ = _self_signed(tmp_path, "someone-else")
    oracle = _oracle(tmp_path, max_trials=3)
    address = free_loopback_address()
    server = oracle_server(
        LeasingOracleServicer(oracle, lease_seconds=60),
        address=address,
        token="s3cret",
        tls=(key.read_bytes(), cert.read_bytes()),
    )
    server.start()
    try:
        request = protos.get_service().GetSpaceRequest()
        for stranger in (
            oracle_stub(address, "s3cret"),  # in clear
            oracle_stub(address, "s3cret", tls_ca=other_ca.read_bytes()),  # trusts another CA
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stranger.GetSpace(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        worker = oracle_stub(address, "s3cret", worker="worker0", tls_ca=cert.read_bytes())
        space = worker.GetSpace(request, timeout=10)
        assert [
            hp.name for hp in keras_tuner.HyperParameters.from_proto(space.hyperparameters).space
        ] == ["rate"]
        # TLS does not replace the token: a worker that trusts the chief still needs it.
        with pytest.raises(grpc.RpcError) as refused:
            oracle_stub(address, None, tls_ca=cert.read_bytes()).GetSpace(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A worker learns what is wrong at once, not after KerasTuner's hour of waiting.
        wrong_ca = oracle_stub(address, "s3cret", tls_ca=other_ca.read_bytes())
        with pytest.raises(UserInputError, match="no TLS connection to the chief at '127"):
            wait_for_chief(wrong_ca, address, seconds=3600)
        wrong_token = oracle_stub(address, "guess", tls_ca=cert.read_bytes())
        with pytest.raises(UserInputError, match="refused this worker's token"):
            wait_for_chief(wrong_token, address, seconds=3600)
        wait_for_chief(worker, address, seconds=3600)
        nobody = free_loopback_address()  # not listening: keeps asking until `seconds`
        wait_for_chief(oracle_stub(nobody, "s3cret"), nobody, seconds=0)
    finally:
        server.stop(grace=None)


def test_unreadable_tls_files_are_named_in_one_line(tmp_path: Path) -> None:
    from kt_pipeline.config import load_config
    from kt_pipeline.errors import UserInputError
    from kt_pipeline.parallel import oracle_tls

    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    with pytest.raises(
        UserInputError, match=r"runtime.oracle_tls_cert. is not a PEM file: '.*cert.txt'"
    ):
        oracle_tls(cert=str(not_pem))
    with pytest.raises(
        UserInputError, match=r"runtime.oracle_tls_ca. cannot be read: '.*nowhere.pem'"
    ):
        oracle_tls(ca=str(tmp_path / "nowhere.pem"))
    with pytest.raises(UserInputError, match=r"runtime.oracle_tls_cert. must be set together"):
        load_config(settings={"runtime.oracle_tls_cert": str(not_pem)})


def test_only_calls_with_the_searchs_token_reach_the_oracle(tmp_path: Path) -> None:
    import grpc

    from kt_pipeline.launcher import free_loopback_address

    oracle = _oracle(tmp_path, max_trials=3)
    address = free_loopback_address()
    server = oracle_server(
        LeasingOracleServicer(oracle, lease_seconds=60), address=address, token="s3cret"
    )
    server.start()
    try:
        request = protos.get_service().GetSpaceRequest()
        for stranger in (oracle_stub(address, None), oracle_stub(address, "guess")):
            with pytest.raises(grpc.RpcError) as refused:
                stranger.GetSpace(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            create = protos.get_service().CreateTrialRequest(tuner_id="intruder")
            with pytest.raises(grpc.RpcError):
                stranger.CreateTrial(create, timeout=10)
        assert not oracle.trials  # the refused calls changed nothing
        space = oracle_stub(address, "s3cret").GetSpace(request, timeout=10)
        restored = keras_tuner.HyperParameters.from_proto(space.hyperparameters)
        assert [hp.name for hp in restored.space] == ["rate"]
    finally:
        server.stop(grace=None)


def test_a_chief_beyond_loopback_without_a_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kt_pipeline.cli import main

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    data = tmp_path / "data.csv"
    make_frame(60).to_csv(data, index=False)
    args = random_search_args(tmp_path / "experiment", data, max_trials=1, max_epochs=1)
    assert main([*args, "--role", "chief", "--oracle", "0.0.0.0:18999"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "beyond loopback with no token" in error
    assert TOKEN_ENV in error and "--insecure" in error
    assert not (tmp_path / "experiment").exists()


def test_forged_ends_are_rejected_and_leave_the_oracle_as_it_was(tmp_path: Path) -> None:
    """The attack of the issue: a made-up end of a trial with a made-up metric left
    the oracle unable to rank its trials ('>' between float and None)."""
    import grpc

    oracle = _oracle(tmp_path, max_trials=3)
    servicer = LeasingOracleServicer(oracle, lease_seconds=60)
    trial = _create(servicer, "worker0")
    service = protos.get_service()

    def end(proto: Any) -> Any:
        context = _Context("worker0")
        with pytest.raises(_Aborted):
            servicer.EndTrial(service.EndTrialRequest(trial=proto), context)
        return context.code

    made_up = trial_module.Trial(oracle.get_space(), trial_id="9999", status="COMPLETED")
    assert end(made_up.to_proto()) == grpc.StatusCode.NOT_FOUND
    unscored = copy_trial(trial, status="COMPLETED")
    assert end(unscored.to_proto()) == grpc.StatusCode.INVALID_ARGUMENT  # no `score` reported
    running = copy_trial(trial, status="RUNNING")
    assert end(running.to_proto()) == grpc.StatusCode.INVALID_ARGUMENT  # not an end
    update = service.UpdateTrialRequest(trial_id="9999", metrics={"score": 1.0}, step=0)
    with pytest.raises(_Aborted):
        servicer.UpdateTrial(update, _Context("worker0"))
    assert oracle.trials[trial.trial_id].status == "RUNNING" and "9999" not in oracle.trials
    oracle.get_best_trials(1)  # still rankable: this raised after the forged end

    # The real worker's report and end still go through.
    update = service.UpdateTrialRequest(trial_id=trial.trial_id, metrics={"score": 0.5}, step=0)
    servicer.UpdateTrial(update, _Context("worker0"))
    done = copy_trial(trial, status="COMPLETED")
    servicer.EndTrial(service.EndTrialRequest(trial=done.to_proto()), _Context("worker0"))
    assert oracle.get_best_trials(1)[0].score == 0.5


def _refused(call: Any, request: Any, worker: str | None) -> Any:
    """The status code `call` ended with for a call from `worker`."""
    context = _Context(worker)
    with pytest.raises(_Aborted):
        call(request, context)
    return context.code


def test_a_worker_may_report_and_end_only_its_own_running_trial(tmp_path: Path) -> None:
    import grpc

    clock = _Clock()
    oracle = _oracle(tmp_path, max_trials=4)
    servicer = LeasingOracleServicer(oracle, lease_seconds=10, clock=clock)
    service = protos.get_service()
    mine, theirs = _create(servicer, "worker0"), _create(servicer, "worker1")
    report = service.UpdateTrialRequest(trial_id=theirs.trial_id, metrics={"score": 9.0})
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert _refused(servicer.UpdateTrial, report, "worker0") == denied
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert _refused(servicer.UpdateTrial, report, None) == invalid  # a call that names no one
    done = trial_module.Trial(oracle.get_space(), trial_id=theirs.trial_id, status="FAILED")
    assert (
        _refused(servicer.EndTrial, service.EndTrialRequest(trial=done.to_proto()), "worker0")
        == denied
    )
    assert oracle.trials[theirs.trial_id].status == "RUNNING"
    assert not oracle.trials[theirs.trial_id].metrics.exists("score")

    # Metrics without the objective, and an end with other hyperparameters: refused.
    wrong = service.UpdateTrialRequest(trial_id=mine.trial_id, metrics={"loss": 0.1})
    assert _refused(servicer.UpdateTrial, wrong, "worker0") == invalid
    report = service.UpdateTrialRequest(trial_id=mine.trial_id, metrics={"score": 0.5})
    servicer.UpdateTrial(report, _Context("worker0"))
    forged = trial_module.Trial(oracle.get_space(), trial_id=mine.trial_id, status="COMPLETED")
    forged.hyperparameters.values["rate"] = 0.0123456
    end = service.EndTrialRequest(trial=forged.to_proto())
    assert _refused(servicer.EndTrial, end, "worker0") == invalid
    assert oracle.trials[mine.trial_id].status == "RUNNING"

    # The real end goes through once; a second end of the same trial is refused.
    ended = copy_trial(oracle.trials[mine.trial_id], status="COMPLETED")
    servicer.EndTrial(service.EndTrialRequest(trial=ended.to_proto()), _Context("worker0"))
    assert oracle.trials[mine.trial_id].status == "COMPLETED"
    again = service.EndTrialRequest(trial=copy_trial(ended, status="FAILED").to_proto())
    assert _refused(servicer.EndTrial, again, "worker0") == denied
    assert oracle.trials[mine.trial_id].status == "COMPLETED"
    assert oracle.end_order == [mine.trial_id]

    # A worker whose lease ran out may not end the trial that went back to the queue,
    # and its heartbeat hears so.
    clock.now += 11
    assert servicer.reap() == [(theirs.trial_id, "worker1")]
    beat = _Context("worker1")
    servicer.GetTrial(service.GetTrialRequest(trial_id=theirs.trial_id), beat)
    assert beat.trailing == {LEASE_METADATA: "no"}
    late = copy_trial(oracle.trials[theirs.trial_id], status="COMPLETED")
    assert (
        _refused(servicer.EndTrial, service.EndTrialRequest(trial=late.to_proto()), "worker1")
        == denied
    )
    assert _create(servicer, "worker2").trial_id == theirs.trial_id  # still to run, once
    beat = _Context("worker2")
    servicer.GetTrial(service.GetTrialRequest(trial_id=theirs.trial_id), beat)
    assert beat.trailing == {LEASE_METADATA: "yes"}

    # Asking for a trial as the chief, or in another worker's name: refused.
    ask = service.CreateTrialRequest(tuner_id="chief")
    assert _refused(servicer.CreateTrial, ask, "chief") == invalid
    ask = service.CreateTrialRequest(tuner_id="worker2")
    assert _refused(servicer.CreateTrial, ask, "worker3") == denied


def copy_trial(trial: trial_module.Trial, *, status: str) -> trial_module.Trial:
    """`trial` with another status, as a worker sends it back."""
    copy = trial_module.Trial.from_proto(trial.to_proto())
    copy.status = status
    return copy


def test_what_real_workers_send_back_passes_the_checks(tmp_path: Path) -> None:
    """A worker's end may carry hyperparameters its build added (conditional ones), and
    a trial that ended INVALID is retried by another worker, which may end it."""
    oracle = _oracle(tmp_path, max_trials=3)
    oracle.max_retries_per_trial = 1
    servicer = LeasingOracleServicer(oracle, lease_seconds=60)
    service = protos.get_service()
    first = _create(servicer, "worker0")
    crashed = copy_trial(first, status="INVALID")
    crashed.hyperparameters.Choice("added_by_the_build", ["a", "b"])
    servicer.EndTrial(service.EndTrialRequest(trial=crashed.to_proto()), _Context("worker0"))
    again = _create(servicer, "worker1")
    assert again.trial_id == first.trial_id  # KerasTuner retries an INVALID trial
    report = service.UpdateTrialRequest(trial_id=again.trial_id, metrics={"score": 0.7})
    servicer.UpdateTrial(report, _Context("worker1"))
    done = copy_trial(oracle.trials[again.trial_id], status="COMPLETED")
    servicer.EndTrial(service.EndTrialRequest(trial=done.to_proto()), _Context("worker1"))
    assert oracle.trials[first.trial_id].status == "COMPLETED"
    assert oracle.get_best_trials(1)[0].score == 0.7
