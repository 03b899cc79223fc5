"""Starts a parallel search on this host: one chief and N worker processes.

Each process is the ordinary ``kt-pipeline search`` command with ``--role``; the chief
serves KerasTuner's oracle on loopback and writes the results and the export, the
workers run trials. Each worker gets its own GPU (``CUDA_VISIBLE_DEVICES``) when the
host has GPUs, else its own share of the CPU cores (affinity plus TensorFlow's and
OpenMP's thread counts), so N workers do not fight over the same cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from kt_pipeline.parallel import TOKEN_ENV, split_address

__all__ = ["cpu_shares", "free_loopback_address", "launch", "worker_environment"]

log = logging.getLogger("kt_pipeline")

#: Seconds the launcher waits for the chief's oracle to accept connections.
_CHIEF_START_SECONDS = 300.0


def free_loopback_address() -> str:
    """``127.0.0.1:PORT`` with a port the OS reports free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def cpu_shares(workers: int, cpus: Sequence[int]) -> list[list[int]]:
    """Splits `cpus` into `workers` contiguous shares; with fewer CPUs than workers,
    workers share CPUs round-robin."""
    cpus = list(cpus)
    if workers <= len(cpus):
        size, extra = divmod(len(cpus), workers)
        shares, start = [], 0
        for index in range(workers):
            end = start + size + (1 if index < extra else 0)
            shares.append(cpus[start:end])
            start = end
        return shares
    return [[cpus[index % len(cpus)]] for index in range(workers)]


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    import tensorflow as tf

    return [str(i) for i in range(len(tf.config.list_physical_devices("GPU")))]


def worker_environment(
    index: int, *, gpus: Sequence[str], cpus: Sequence[int] | None
) -> dict[str, str]:
    """Environment overrides that pin worker `index` to one GPU, or to its CPU share."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": gpus[index % len(gpus)]}
    threads = str(len(cpus or ()) or 1)
    return {
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": threads,
    }


def _spawn(args: list[str], env: dict[str, str], cpus: Sequence[int] | None) -> subprocess.Popen:
    def pin() -> None:  # runs in the child before exec
        if cpus:
            os.sched_setaffinity(0, cpus)

    return subprocess.Popen(
        [sys.executable, "-m", "kt_pipeline", *args],
        env={**os.environ, **env},
        preexec_fn=pin if cpus and hasattr(os, "sched_setaffinity") else None,
    )


def _wait_for_oracle(address: str, chief: subprocess.Popen) -> bool:
    """True once the chief accepts connections; False if it exits or takes too long.
    A TCP connection is enough: a gRPC channel in clear never becomes ready on a chief
    that serves TLS."""
    host, port = split_address(address)
    deadline = time.monotonic() + _CHIEF_START_SECONDS
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        except OSError:
            try:
                chief.wait(timeout=0.2)  # not listening yet: give it a moment, or see it exit
                return False
            except subprocess.TimeoutExpired:
                pass
    return False


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch(
    search_args: Sequence[str],
    *,
    workers: int,
    address: str,
    lease_seconds: float,
    overwrite: bool = False,
    resume_command: str = "the same command",
) -> int:
    """Runs a chief and `workers` workers; returns the chief's exit code (128 + the
    signal's number when a signal killed it).

    Args:
        search_args: ``kt-pipeline search`` options shared by every process (config,
            overrides, data, ...), without ``--workers``, ``--role`` or ``--overwrite``.
        workers: Worker processes to start.
        address: ``HOST:PORT`` the chief binds.
        lease_seconds: The workers' lease, to bound how long a chief may outlive them.
        overwrite: Start the experiment afresh (the chief discards it before serving).
        resume_command: What to run to resume after the chief dies, for its message.
    """
    common = ["search", *search_args, "--oracle", address]
    # A fresh shared secret for this search, in the children's environment only (not on
    # their command lines, which `ps` shows); one set by the user, or a file, is kept.
    token = {} if os.environ.get(TOKEN_ENV) else {TOKEN_ENV: secrets.token_urlsafe(32)}
    chief = _spawn(
        [*common, "--role", "chief", *(["--overwrite"] if overwrite else [])], token, None
    )
    processes = [chief]
    try:
        if not _wait_for_oracle(address, chief):
            log.error("kt-pipeline: the chief did not start serving on %s", address)
            return chief.wait() or 1
        gpus = _visible_gpus()
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        shares = cpu_shares(workers, cpus) if cpus and not gpus else [[]] * workers
        for index in range(workers):
            share = shares[index] or None
            env = {**worker_environment(index, gpus=gpus, cpus=share), **token}
            log.info(
                "worker%d: %s",
                index,
                f"GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else f"CPUs {share}",
            )
            processes.append(
                _spawn(
                    [*common, "--role", "worker", "--worker-id", f"worker{index}"],
                    env,
                    None if gpus else share,
                )
            )
        code = _supervise(chief, processes[1:], lease_seconds=lease_seconds)
        if code < 0:  # a signal killed the chief: it could not say so itself
            log.error(
                "kt-pipeline: the chief was killed by %s; the search so far is kept in the "
                "experiment directory, and %s resumes it",
                signal.Signals(-code).name,
                resume_command,
            )
            code = 128 - code
        for worker in processes[1:] if code == 0 else ():
            # Told to stop by the chief: let them exit cleanly. After a failed chief no
            # one will tell them, so they are stopped at once below.
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=30)
        for index, worker in enumerate(processes[1:]):
            if worker.poll() not in (None, 0):
                log.warning("worker%d exited with code %s", index, worker.returncode)
        return code
    finally:
        _stop(processes)


def _supervise(
    chief: subprocess.Popen, workers: Sequence[subprocess.Popen], *, lease_seconds: float
) -> int:
    """Waits for the chief. Workers that exit 0 were told the search is over, so the
    chief finishes on its own; if every worker failed instead, no one is left to run
    the trials the chief waits for, so it is stopped after its leases ran out."""
    all_gone_since: float | None = None
    while True:
        try:
            return chief.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if any(worker.poll() is None or worker.returncode == 0 for worker in workers):
            continue
        all_gone_since = all_gone_since or time.monotonic()
        if time.monotonic() - all_gone_since > 2 * lease_seconds + 30:
            codes = [worker.returncode for worker in workers]
            log.error("kt-pipeline: every worker exited (codes %s); stopping the chief", codes)
            return 1
