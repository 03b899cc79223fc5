"""Parallel trials on KerasTuner's chief/worker mode, with worker leases.

KerasTuner runs a search in parallel when every process has ``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` set: the ``chief`` serves its
oracle over gRPC and the workers ask it for trials, all writing into one experiment
directory. That engine is used as it is, except for one defect: a worker that dies in
the middle of a trial leaves the trial RUNNING forever, and the chief, which waits for
every ongoing trial and every known worker, never exits.

Ours gives each worker a lease. A worker sends a heartbeat (a ``GetTrial`` call, an
RPC KerasTuner already has) several times per lease while it runs a trial, and every
oracle call it makes renews the lease too. The chief's servicer drops a worker whose
lease ran out and puts its trial back in the oracle's retry queue, so the next worker
that asks for a trial gets the same trial id with the same hyperparameters. While some
trial is still running, a worker that would be told to stop is told to wait instead
(``IDLE``), so a trial that comes back to the queue late still finds a worker; the
worker waits a moment before it asks again (`kt_pipeline._compat`), so idle workers
neither spin nor hold the chief's threads.

Every call names its worker in its metadata (`WORKER_METADATA`), beside the search's
token, so the servicer can refuse what a worker may not do: report or end a trial that
is not leased to it, end a trial twice, change a trial's hyperparameters.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, NoReturn

import grpc
import keras
import keras_tuner

from kt_pipeline._compat import (
    defer_oracle_saves,
    dist_utils,
    forget_worker,
    locked,
    oracle_chief,
    oracle_client,
    oracle_lock,
    protos,
    retry_queue,
    trial_module,
    write_running_trials_every,
)
from kt_pipeline.errors import UserInputError

__all__ = [
    "HEARTBEATS_PER_LEASE",
    "LEASE_METADATA",
    "RUNNING_TRIAL_WRITE_SECONDS",
    "STATE_WRITE_SECONDS",
    "TLS_ENV",
    "TOKEN_ENV",
    "WORKER_METADATA",
    "LeasingOracleServicer",
    "StopWhenTakenBack",
    "TrialHeartbeat",
    "TrialTakenBack",
    "is_chief",
    "is_loopback",
    "is_worker",
    "join_address",
    "oracle_role",
    "oracle_server",
    "oracle_stub",
    "oracle_tls",
    "oracle_token",
    "serve_oracle",
    "split_address",
    "wait_for_chief",
    "worker_stub",
]

log = logging.getLogger("kt_pipeline")

#: Heartbeats a worker sends per lease period, so one late heartbeat is not a death.
HEARTBEATS_PER_LEASE = 5

#: The chief writes a running trial's reports to its file at most this often
#: (`kt_pipeline._compat.write_running_trials_every`).
RUNNING_TRIAL_WRITE_SECONDS = 10.0

#: The chief writes the oracle's state at most this often, and when it stops
#: (`kt_pipeline._compat.defer_oracle_saves`).
STATE_WRITE_SECONDS = 1.0

_STATUS = trial_module.TrialStatus
# What a worker may report a trial ended as.
_ENDINGS = (_STATUS.COMPLETED, _STATUS.FAILED, _STATUS.INVALID, _STATUS.STOPPED)


def join_address(host: str, port: str) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets as gRPC wants it."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(address: str) -> tuple[str, str]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts.

    Raises:
        UserInputError: no port, or a port that is not a number in 1..65535.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserInputError(f"`--oracle` must be HOST:PORT. Received: {address!r}")
    return host, port


@contextlib.contextmanager
def oracle_role(
    *,
    tuner_id: str,
    address: str,
    token: str | None = None,
    tls_files: dict[str, str] | None = None,
) -> Iterator[None]:
    """Sets KerasTuner's chief/worker environment for the duration of a search.

    Args:
        tuner_id: ``chief`` for the oracle's process, any other id for a worker.
        address: ``HOST:PORT`` the chief binds and the workers connect to.
        token: The search's shared secret (`TOKEN_ENV`), if it has one.
        tls_files: Paths of the TLS files by `TLS_ENV` key (``cert``, ``key``, ``ca``).
    """
    host, port = split_address(address)
    values = {
        "KERASTUNER_TUNER_ID": tuner_id,
        "KERASTUNER_ORACLE_IP": host.strip("[]"),
        "KERASTUNER_ORACLE_PORT": port,
        **({TOKEN_ENV: token} if token else {}),
        **{TLS_ENV[name]: path for name, path in (tls_files or {}).items() if path},
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_chief() -> bool:
    """True in the chief of a parallel search (the process that serves the oracle)."""
    return bool(dist_utils.is_chief_oracle())


def is_worker() -> bool:
    """True in a worker of a parallel search."""
    return bool(dist_utils.has_chief_oracle()) and not is_chief()


@locked
def _create_or_idle(oracle: keras_tuner.Oracle, tuner_id: str) -> Any:
    trial = oracle.create_trial(tuner_id)
    if trial.status == _STATUS.STOPPED and oracle.ongoing_trials:
        # Another worker's trial may still come back to the queue: keep this one.
        oracle.tuner_ids.add(tuner_id)
        return trial_module.Trial(oracle.get_space(), trial_id="idle", status=_STATUS.IDLE)
    return trial


#: The gRPC metadata key that names the worker making a call.
WORKER_METADATA = "kt-pipeline-worker"


#: The trailing gRPC metadata key of the chief's answer to ``GetTrial``: ``yes`` when the
#: trial is leased to the caller, else ``no``.
LEASE_METADATA = "kt-pipeline-leased"


def _caller(context: Any) -> str | None:
    """The worker id a call names in its metadata (`WORKER_METADATA`), if any."""
    if context is None:
        return None
    metadata = dict(context.invocation_metadata() or ())
    caller = metadata.get(WORKER_METADATA)
    return None if caller is None else str(caller)


def _named_caller(context: Any) -> str:
    """The worker id a call names; a call that changes a trial must name one."""
    caller = _caller(context)
    if not caller:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the call names no worker ({WORKER_METADATA})",
        )
    return caller


def _abort(context: Any, code: grpc.StatusCode, details: str) -> NoReturn:
    """Ends the call with `code`; the oracle is not touched."""
    context.abort(code, details)
    raise AssertionError("grpc's abort returned")  # it raises; this keeps the type checker honest


@locked
def _owner(oracle: keras_tuner.Oracle, trial_id: str) -> str | None:
    for tuner_id, trial in oracle.ongoing_trials.items():
        if trial.trial_id == trial_id:
            return str(tuner_id)
    return None


class LeasingOracleServicer(oracle_chief.OracleServicer):
    """KerasTuner's oracle servicer with a lease per worker.

    Args:
        oracle: The chief's oracle.
        lease_seconds: A worker that made no call for this long is presumed dead.
        clock: Monotonic time source (tests pass a fake one).
    """

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        *,
        lease_seconds: float,
        clock: Any = time.monotonic,
    ) -> None:
        super().__init__(oracle)
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._changed = threading.Condition()
        now = clock()
        self._last_seen: dict[str, float] = {tuner_id: now for tuner_id in oracle.tuner_ids}
        #: ``(trial_id, tuner_id)`` of every trial taken back from a lost worker.
        self.requeued: list[tuple[str, str]] = []

    def _seen(self, tuner_id: str | None) -> None:
        if tuner_id is not None:
            self._last_seen[tuner_id] = self._clock()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Blocks until a trial ends or is taken back, or `timeout` seconds pass."""
        with self._changed:
            self._changed.wait(timeout)

    def CreateTrial(self, request: Any, context: Any) -> Any:
        tuner_id = request.tuner_id
        if not tuner_id or tuner_id == "chief":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad worker id {tuner_id!r}")
        caller = _named_caller(context)
        if caller != tuner_id:
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"worker {caller!r} asked for a trial as {tuner_id!r}",
            )
        # "Wait" (IDLE) is answered at once: a held request would take one of the
        # server's threads from the heartbeats and reports of the workers still
        # training, and at the end of a search with more idle workers than threads,
        # those would wait past their leases (`benchmarks/oracle_load.py`).
        self._seen(tuner_id)
        trial = _create_or_idle(self.oracle, tuner_id)
        if trial.status == _STATUS.STOPPED:
            self.stop_triggered = True
            self._notify()
        return protos.get_service().CreateTrialResponse(trial=trial.to_proto())

    def UpdateTrial(self, request: Any, context: Any) -> Any:
        with oracle_lock(self.oracle):  # checked and applied in one step
            self._check_leased(request.trial_id, context)
            missing = [name for name in self._objective_names() if name not in request.metrics]
            if missing:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"trial {request.trial_id}'s report has no {missing[0]} "
                    f"(metrics: {sorted(request.metrics)})",
                )
            self._seen(_caller(context))
            return super().UpdateTrial(request, context)

    def GetTrial(self, request: Any, context: Any) -> Any:
        """KerasTuner's, plus the trailing metadata `LEASE_METADATA`: whether the trial
        is leased to the caller, so a worker's heartbeat learns when its trial was
        taken back and stops training it."""
        with oracle_lock(self.oracle):
            self._check_known(request.trial_id, context)
            caller = _caller(context)
            self._seen(caller)
            mine = caller is not None and _owner(self.oracle, request.trial_id) == caller
            if context is not None:
                context.set_trailing_metadata(((LEASE_METADATA, "yes" if mine else "no"),))
            return super().GetTrial(request, context)

    def EndTrial(self, request: Any, context: Any) -> Any:
        try:
            ended = trial_module.Trial.from_proto(request.trial)
        except (ValueError, KeyError, TypeError, AttributeError):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed trial")
        if ended.status not in _ENDINGS:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"not an end: {ended.status!r}")
        with oracle_lock(self.oracle):  # checked and applied in one step
            self._check_leased(ended.trial_id, context)
            given = self.oracle.trials[ended.trial_id].hyperparameters.values
            returned = ended.hyperparameters.values
            changed = sorted(k for k, v in given.items() if returned.get(k) != v)
            if changed:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"trial {ended.trial_id} came back with other hyperparameters ({changed[0]})",
                )
            metrics = self.oracle.trials[ended.trial_id].metrics
            if ended.status == _STATUS.COMPLETED and not all(
                metrics.exists(name) for name in self._objective_names()
            ):
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"trial {ended.trial_id} reported no {self.oracle.objective.name}",
                )
            self._seen(_caller(context))
            response = super().EndTrial(request, context)
        self._notify()
        return response

    def _check_known(self, trial_id: str, context: Any) -> None:
        """Aborts the call when `trial_id` is no trial of this search: a made-up id must
        not reach the oracle."""
        if trial_id not in self.oracle.trials:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"no trial {trial_id!r}")

    def _check_leased(self, trial_id: str, context: Any) -> None:
        """Aborts the call unless `trial_id` is running on the calling worker: not
        another worker's trial, not one that already ended, not one taken back from a
        worker whose lease ran out (its late result would race the new worker's)."""
        self._check_known(trial_id, context)
        caller = _named_caller(context)
        owner = _owner(self.oracle, trial_id)
        if owner is not None and owner == caller:
            return
        status = self.oracle.trials[trial_id].status
        if owner is None and status != _STATUS.RUNNING:
            reason = f"trial {trial_id} already ended ({status})"
        elif owner is None:
            reason = (
                f"trial {trial_id} was taken back from {caller!r}: its lease ran out, or the "
                "chief restarted; it runs again"
            )
        else:
            reason = f"trial {trial_id} is leased to {owner!r}, not to {caller!r}"
        _abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)

    def _objective_names(self) -> list[str]:
        names = [o.name for o in getattr(self.oracle.objective, "objectives", None) or []]
        return names or [self.oracle.objective.name]

    def reap(self) -> list[tuple[str, str]]:
        """Drops the workers whose lease ran out and requeues their trials.

        Returns:
            ``(trial_id, tuner_id)`` of each trial taken back by this call.
        """
        taken = _reap(self.oracle, self._last_seen, self._clock() - self.lease_seconds)
        for trial_id, tuner_id in taken:
            log.warning(
                "worker %s sent nothing for %.0f s: presumed dead; trial %s goes to another worker",
                tuner_id,
                self.lease_seconds,
                trial_id,
            )
        self.requeued.extend(taken)
        if taken:
            self._notify()
        return taken


@locked
def _reap(
    oracle: keras_tuner.Oracle, last_seen: dict[str, float], cutoff: float
) -> list[tuple[str, str]]:
    taken = []
    for tuner_id in sorted(oracle.tuner_ids):
        if last_seen.get(tuner_id, cutoff) >= cutoff:
            continue
        trial_id = forget_worker(oracle, tuner_id)
        if trial_id is not None:
            taken.append((trial_id, tuner_id))
    if taken:
        oracle.save()
    return taken


@locked
def _search_over(oracle: keras_tuner.Oracle) -> bool:
    return bool(oracle_chief.exit_chief(oracle)) and not retry_queue(oracle)


#: The environment variable that carries a search's oracle token to its processes.
TOKEN_ENV = "KT_PIPELINE_ORACLE_TOKEN"


def oracle_token(token_file: str = "") -> str | None:
    """The search's shared secret: `TOKEN_ENV`, else the first line of `token_file`;
    None when neither is set. Never a command-line value, which ``ps`` would show.

    Raises:
        UserInputError: the token file cannot be read or is empty.
    """
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token or not token_file:
        return token or None
    try:
        with open(token_file, encoding="utf-8") as handle:
            token = handle.readline().strip()
    except OSError as error:
        raise UserInputError(
            f"`runtime.oracle_token_file` cannot be read: {token_file!r} "
            f"({error.strerror or error})"
        ) from error
    if not token:
        raise UserInputError(f"`runtime.oracle_token_file` is empty: {token_file!r}")
    return token


#: Environment variables that carry a search's TLS files (paths, not secrets) to its
#: processes: the chief's certificate and key, and the CA the workers trust.
TLS_ENV = {
    "cert": "KT_PIPELINE_ORACLE_TLS_CERT",
    "key": "KT_PIPELINE_ORACLE_TLS_KEY",
    "ca": "KT_PIPELINE_ORACLE_TLS_CA",
}


def oracle_tls(*, cert: str = "", key: str = "", ca: str = "") -> dict[str, bytes]:
    """The TLS files named by the ``runtime.oracle_tls_*`` settings, read: a chief needs
    `cert` and `key`, a worker `ca`. Empty names are left out.

    Raises:
        UserInputError: a file cannot be read or holds no PEM block.
    """
    read = {}
    for name, path in (("cert", cert), ("key", key), ("ca", ca)):
        if not path:
            continue
        try:
            with open(path, "rb") as handle:
                content = handle.read()
        except OSError as error:
            raise UserInputError(
                f"`runtime.oracle_tls_{name}` cannot be read: {path!r} ({error.strerror or error})"
            ) from error
        if b"-----BEGIN " not in content:
            raise UserInputError(f"`runtime.oracle_tls_{name}` is not a PEM file: {path!r}")
        read[name] = content
    return read


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` binds only this host's loopback interface."""
    host = split_address(address)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _TokenCheck(grpc.ServerInterceptor):
    """Lets through only calls that carry ``authorization: Bearer <token>``; compared
    in constant time, so the answer's timing does not tell how much of a guess was right."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def refuse(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong oracle token")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return continuation(details)
        return self._refusal


class _CallerMetadata(grpc.UnaryUnaryClientInterceptor):
    """Adds the search's token and the worker's id to every call a worker makes."""

    def __init__(self, token: str | None, worker: str | None) -> None:
        self._metadata = [
            *([("authorization", f"Bearer {token}")] if token else []),
            *([(WORKER_METADATA, worker)] if worker else []),
        ]

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), *self._metadata]
        return continuation(details._replace(metadata=metadata), request)


def oracle_stub(
    address: str, token: str | None, *, worker: str | None = None, tls_ca: bytes | None = None
) -> Any:
    """A gRPC stub to the chief at `address`, sending `token` and `worker` (the caller's
    id) with every call; over TLS, trusting `tls_ca` (PEM), when it is given."""
    if tls_ca is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca))
    channel = grpc.intercept_channel(channel, _CallerMetadata(token, worker))
    return protos.get_service_grpc().OracleStub(channel)


# Answers in a row of a chief that closes the connection before a worker may say the
# chief serves TLS and the worker does not.
_CLOSED_ANSWERS = 10


def worker_stub(worker: str) -> Any:
    """The stub a worker's KerasTuner `OracleClient` calls the chief through
    (`_compat.apply` installs it): the search's token (`TOKEN_ENV`) and the worker's id
    on every call, over TLS when the search has a CA (`TLS_ENV`). It returns once the
    chief answers (`wait_for_chief`), so a refused token or TLS handshake is one line,
    not an hour's silent wait."""
    address = join_address(os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"])
    tls_ca = oracle_tls(ca=os.environ.get(TLS_ENV["ca"], "")).get("ca")
    stub = oracle_stub(address, os.environ.get(TOKEN_ENV) or None, worker=worker, tls_ca=tls_ca)
    wait_for_chief(stub, address, seconds=oracle_client.TIMEOUT)
    return stub


def wait_for_chief(stub: Any, address: str, *, seconds: float) -> None:
    """Returns once the chief at `address` answers; while it is not listening yet,
    keeps asking (for up to `seconds`, as KerasTuner's own wait does). A chief that
    refuses this worker's token or TLS is named in one line at once, where KerasTuner
    would wait an hour in silence.

    Raises:
        UserInputError: the chief refused the token, the TLS handshake failed, or the
            chief keeps closing the connection (it serves TLS; the worker does not).
    """
    request = protos.get_service().GetSpaceRequest()
    deadline = time.monotonic() + seconds
    closed = 0
    retry = threading.Event()
    while True:
        try:
            stub.GetSpace(request, timeout=10)
            return
        except grpc.RpcError as error:
            details = str(error.details() or "")
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise UserInputError(
                    f"the chief at {address!r} refused this worker's token: set the search's "
                    f"{TOKEN_ENV} or runtime.oracle_token_file ({details})"
                ) from None
            if "handshake" in details.lower():
                raise UserInputError(
                    f"no TLS connection to the chief at {address!r}: check "
                    "runtime.oracle_tls_ca, and that the chief serves TLS with a certificate "
                    f"that names {split_address(address)[0]!r} ({details.rsplit(': ', 2)[-2]})"
                ) from None
            closed = closed + 1 if "socket closed" in details.lower() else 0
            if closed >= _CLOSED_ANSWERS:
                raise UserInputError(
                    f"the chief at {address!r} closes every connection: it may serve TLS, "
                    "and this worker has no runtime.oracle_tls_ca"
                ) from None
            if time.monotonic() > deadline:
                return  # KerasTuner's own calls report what is wrong from here
        retry.wait(1.0)  # not listening yet


def serve_oracle(
    oracle: keras_tuner.Oracle,
    *,
    address: str,
    lease_seconds: float,
    token: str | None = None,
    tls: tuple[bytes, bytes] | None = None,
) -> list[tuple[str, str]]:
    """Serves `oracle` to the workers until the search is over; returns then, with
    ``(trial_id, tuner_id)`` of every trial taken back from a worker whose lease ran out.

    Replaces `keras_tuner.src.distribute.oracle_chief.start_server`: same service,
    plus leases, a thread pool, the oracle's state written at most every
    `STATE_WRITE_SECONDS` and a running trial's reports every
    `RUNNING_TRIAL_WRITE_SECONDS` (not on every call), a prompt
    exit once the last trial has ended and every live worker was told to stop, and,
    with `token`, a refusal (``UNAUTHENTICATED``) for every call that does not carry it;
    with `tls` (the chief's PEM key and certificate), over TLS.

    Raises:
        UserInputError: the address cannot be bound.
    """
    write_running_trials_every(oracle, RUNNING_TRIAL_WRITE_SECONDS)
    flush = defer_oracle_saves(oracle)
    servicer = LeasingOracleServicer(oracle, lease_seconds=lease_seconds)
    server = oracle_server(servicer, address=address, token=token, tls=tls)
    server.start()
    log.info("oracle serving on %s (worker lease %.0f s)", address, lease_seconds)
    try:
        while True:
            servicer.reap()
            flush(every=STATE_WRITE_SECONDS)
            if servicer.stop_triggered and _search_over(oracle):
                break
            servicer.wait(min(1.0, lease_seconds / HEARTBEATS_PER_LEASE))
    finally:
        server.stop(grace=1.0)
        flush()
    return servicer.requeued


def oracle_server(
    servicer: Any, *, address: str, token: str | None, tls: tuple[bytes, bytes] | None = None
) -> grpc.Server:
    """A gRPC server (not started) for `servicer` on `address`, checking `token`; over
    TLS with `tls`, the chief's PEM key and certificate.

    Raises:
        UserInputError: the address cannot be bound.
    """
    interceptors = [_TokenCheck(token)] if token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), interceptors=interceptors)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
    except RuntimeError as error:
        raise UserInputError(f"the oracle cannot bind {address!r}: {error}") from error
    if not bound:
        raise UserInputError(f"the oracle cannot bind {address!r} (in use, or not this host)")
    return server


class TrialHeartbeat:
    """A worker's background heartbeat for the trial it is running.

    Runs in its own thread, so a long epoch (the training thread busy in TensorFlow)
    still renews the lease; a stalled or killed process stops renewing it.

    Args:
        stub: The worker's gRPC stub to the chief (``OracleClient.stub``).
        trial_id: The trial being run.
        interval: Seconds between heartbeats.
    """

    def __init__(self, stub: Any, trial_id: str, *, interval: float) -> None:
        self._stub = stub
        self.trial_id = self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        #: Set when the chief says the trial is no longer leased to this worker.
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> TrialHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 1)

    def _run(self) -> None:
        request = protos.get_service().GetTrialRequest(trial_id=self._trial_id)
        while not self._stop.wait(self._interval):
            with contextlib.suppress(grpc.RpcError):
                _, call = self._stub.GetTrial.with_call(request, timeout=self._interval)
                if (LEASE_METADATA, "no") in tuple(call.trailing_metadata() or ()):
                    self.lost.set()


class TrialTakenBack(Exception):
    """The chief gave this worker's trial to another worker (its lease ran out while
    it was out of touch): the trial stops here and its result is dropped."""


class StopWhenTakenBack(keras.callbacks.Callback):
    """Stops a worker's training as soon as its heartbeat learns that the trial was
    taken back (`TrialHeartbeat.lost`), before it writes another checkpoint.

    Args:
        heartbeat: Returns the running trial's heartbeat, if any.
    """

    def __init__(self, heartbeat: Callable[[], TrialHeartbeat | None]) -> None:
        super().__init__()
        self._heartbeat = heartbeat

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        heartbeat = self._heartbeat()
        if heartbeat is not None and heartbeat.lost.is_set():
            raise TrialTakenBack(f"trial {heartbeat.trial_id} was taken back")
