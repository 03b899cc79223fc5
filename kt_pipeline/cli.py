"""The ``kt-pipeline`` command: ``search``, ``export``, ``predict``, ``report``,
``lr-find`` and ``plan``.

Bad input ends with one line on stderr that names the field, file or column and the
value received, and exit code 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from kt_pipeline.errors import (
    DiskFullError,
    ExportVerificationError,
    SearchAbortedError,
    UserInputError,
    is_disk_full,
)
from kt_pipeline.quiet_start import start_tensorflow

__all__ = ["main"]

log = logging.getLogger("kt_pipeline")

# Flags that are shorthands for `--set section.key=value`: (flag dest, config key, is text).
_SHORTHANDS = (
    ("data", "data.source", True),
    ("label", "data.label", True),
    ("split", "data.split", True),
    ("folds", "data.folds", False),
    ("tuner", "tuner.algorithm", True),
    ("max_trials", "tuner.max_trials", False),
    ("max_epochs", "tuner.max_epochs", False),
    ("time_budget", "tuner.time_budget", True),
    ("seed", "runtime.seed", False),
    ("experiment_dir", "runtime.experiment_dir", True),
    ("oracle", "runtime.oracle_address", True),
    ("oracle_bind", "runtime.oracle_bind", True),
    ("oracle_token_file", "runtime.oracle_token_file", True),
    ("oracle_tls_cert", "runtime.oracle_tls_cert", True),
    ("oracle_tls_key", "runtime.oracle_tls_key", True),
    ("oracle_tls_ca", "runtime.oracle_tls_ca", True),
)


def _int_or_auto(value: str) -> int | str:
    """An integer flag that also takes ``auto`` (a setting sized for the data)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"`--folds` must be an integer or auto. Received: {value!r}"
        ) from None


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="TOML config file; its values override the defaults"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (TOML syntax, bare text is a string); "
        "repeatable, applied after --config",
    )
    parser.add_argument(
        "--experiment-dir", metavar="DIR", help="experiment folder (runtime.experiment_dir)"
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="builtin:NAME|PATH",
        help="data.source: builtin:digits|breast_cancer|wine|iris|diabetes, "
        "or a .csv/.parquet/.npz file",
    )
    parser.add_argument("--label", metavar="COLUMN", help="data.label: label column of a file")
    parser.add_argument(
        "--split",
        metavar="SPEC",
        help="data.split: random (default), time:COLUMN (the latest rows are held out), "
        "group:COLUMN[,COLUMN...] (no group in two parts) or column:COLUMN (it says "
        "train/validation/test); choose what matches later rows or new entities",
    )
    parser.add_argument(
        "--folds",
        type=_int_or_auto,
        metavar="K",
        help="data.folds: cross-validate each trial on K folds of the training rows, cut "
        "as --split cuts (1: one validation part; auto, the default: 3 under a group split "
        "of few groups)",
    )


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error, and TensorFlow's start-up lines",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kt-pipeline",
        description="Hyperparameter search for Keras models on tabular data.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    search = commands.add_parser(
        "search",
        help="run a search, export the best model, score the test split",
        description="Run a KerasTuner search, export the best model as a SavedModel and "
        "score the held-out test split on the reloaded export. With no options "
        "it tunes an MLP on scikit-learn's bundled digits data set.",
    )
    _add_config_options(search)
    _add_data_options(search)
    search.add_argument(
        "--tuner",
        metavar="NAME",
        help="tuner.algorithm: hyperband (default), bohb, bayesian, random or grid",
    )
    search.add_argument(
        "--max-trials",
        type=int,
        metavar="N",
        help="tuner.max_trials (0: Hyperband's schedule, 20 otherwise)",
    )
    search.add_argument(
        "--max-epochs", type=int, metavar="N", help="tuner.max_epochs: epochs of the longest trial"
    )
    search.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="tuner.time_budget: wall time for the whole search and export (90s, 10m, 1.5h); "
        "no trial starts that cannot finish in time, and the best model so far is exported",
    )
    search.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="runtime.seed: fixes the split, the sampling and the weights",
    )
    search.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an existing search in the experiment folder",
    )
    search.add_argument(
        "--verbose", action="store_true", help="show Keras's per-epoch output (runtime.verbose)"
    )
    parallel = search.add_argument_group(
        "parallel trials",
        "KerasTuner's chief/worker mode: all processes share the experiment folder; "
        "the chief writes the results table and the export",
    )
    parallel.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="start a chief and N workers on this host (each on its own GPU, or its "
        "share of the CPU cores); the oracle binds a free port on 127.0.0.1 unless "
        "--oracle is given",
    )
    parallel.add_argument(
        "--role",
        choices=("chief", "worker"),
        help="run one process of a parallel search: the chief serves the oracle at "
        "--oracle, a worker connects to it (workers may run on other hosts)",
    )
    parallel.add_argument(
        "--oracle",
        metavar="HOST:PORT",
        help="runtime.oracle_address: where workers connect, and the chief binds unless "
        "--oracle-bind is given (default 127.0.0.1:8470)",
    )
    parallel.add_argument(
        "--oracle-token-file",
        metavar="FILE",
        help="runtime.oracle_token_file: the search's shared secret, when "
        "KT_PIPELINE_ORACLE_TOKEN is not set (--workers makes one by itself)",
    )
    parallel.add_argument(
        "--insecure",
        action="store_true",
        help="runtime.oracle_insecure: let the chief bind beyond loopback without a token",
    )
    parallel.add_argument(
        "--oracle-tls-cert",
        metavar="FILE",
        help="runtime.oracle_tls_cert: the chief's PEM certificate (with --oracle-tls-key, "
        "the chief serves TLS)",
    )
    parallel.add_argument(
        "--oracle-tls-key", metavar="FILE", help="runtime.oracle_tls_key: the chief's PEM key"
    )
    parallel.add_argument(
        "--oracle-tls-ca",
        metavar="FILE",
        help="runtime.oracle_tls_ca: the CA certificate workers check the chief's against",
    )
    parallel.add_argument(
        "--oracle-bind",
        metavar="HOST:PORT",
        help="runtime.oracle_bind: where the chief binds when workers dial another "
        "address, e.g. 0.0.0.0:8470 behind a Service",
    )
    parallel.add_argument(
        "--worker-id",
        metavar="NAME",
        help="a worker's id, unique in the search (default: worker-<host>-<pid>)",
    )
    _add_debug(search)
    search.set_defaults(handler=_search)

    export = commands.add_parser(
        "export",
        help="re-export the best trial of an existing experiment",
        description="Export the best trial of a finished (or interrupted) experiment as a "
        "new SavedModel version and score it on the test split. The "
        "experiment's saved config.toml is used unless --config is given. The export "
        "is reloaded and verified (its predictions on the test rows must equal the "
        "in-memory model's within 1e-5; in a fresh process with "
        "export.verify_in_fresh_process) before it is published; otherwise it is kept as "
        "export/rejected-<version> and the command exits with code 1.",
    )
    _add_config_options(export)
    export.add_argument(
        "--describe",
        metavar="DIR",
        help="print the model card of an export version folder (e.g. "
        "experiments/default/export/1) and exit",
    )
    _add_debug(export)
    export.set_defaults(handler=_export)

    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate range test on a representative model of the search space",
        description="Train the search space's default model briefly while raising its "
        "learning rate exponentially (1e-7 to 10) and watch the smoothed loss (Smith, "
        "2017). Prints the suggested learning-rate range and saves a loss-against-"
        'learning-rate plot. search.learning_rate = "auto" runs this before a search.',
    )
    _add_config_options(lr_find)
    _add_data_options(lr_find)
    lr_find.add_argument(
        "--per-optimizer",
        action="store_true",
        help="test every optimizer of search.optimizers (default: the space's first)",
    )
    lr_find.add_argument(
        "--output",
        metavar="PNG",
        help="plot file (default: <experiment dir>/lr_find.png)",
    )
    _add_debug(lr_find)
    lr_find.set_defaults(handler=_lr_find)

    plan = commands.add_parser(
        "plan",
        help="dry run: the space, the schedule, model sizes, time estimate, warnings",
        description="Print what a search would do without running it: every hyperparameter "
        "with its range, scale and conditions; the tuner's schedule (Hyperband's brackets); "
        "the smallest and largest model (parameters, memory per replica); a time per epoch "
        "measured on a short calibration run and the estimated wall time; warnings for a "
        "suspect space. Nothing is written to the experiment directory.",
    )
    _add_config_options(plan)
    _add_data_options(plan)
    plan.add_argument("--tuner", metavar="NAME", help="tuner.algorithm")
    plan.add_argument("--max-trials", type=int, metavar="N", help="tuner.max_trials")
    plan.add_argument("--max-epochs", type=int, metavar="N", help="tuner.max_epochs")
    plan.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="tuner.time_budget: warn when the estimate exceeds it (30 min when not given)",
    )
    plan.add_argument(
        "--calibration-epochs",
        type=int,
        default=3,
        metavar="N",
        help="epochs of the timing run per model (0: no timing, no estimate)",
    )
    _add_debug(plan)
    plan.set_defaults(handler=_plan)

    predict = commands.add_parser(
        "predict",
        help="predict with an exported SavedModel",
        description="Run an exported SavedModel on the feature columns of a CSV/Parquet "
        "file (or the 'x' array of an .npz file) and write predictions as CSV.",
    )
    predict.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="an export version folder, e.g. experiments/default/export/1",
    )
    predict.add_argument("--input", required=True, metavar="FILE", help="rows to predict on")
    predict.add_argument("--output", required=True, metavar="FILE", help="CSV to write")
    _add_debug(predict)
    predict.set_defaults(handler=_predict)

    doctor = commands.add_parser(
        "doctor",
        help="can this host run a search, and on which devices?",
        description="Report the Python, TensorFlow, Keras and KerasTuner versions, the CUDA "
        "and cuDNN TensorFlow was built with, the devices TensorFlow sees (a small matmul "
        "runs on each GPU) and the GPUs the NVIDIA driver reports. Exit 0 when the host is "
        "usable, 1 otherwise.",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_debug(doctor)
    doctor.set_defaults(handler=_doctor)

    report = commands.add_parser(
        "report",
        help="leaderboard, results files, importance and plots of an experiment",
        description="Print the top trials and the hyperparameter importance of a finished "
        "(or interrupted) experiment; write results.csv, results.json and report/ "
        "(report.md with PNG plots) into it. Reads only the experiment folder.",
    )
    report.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="an experiment folder")
    report.add_argument(
        "--top", type=int, default=10, metavar="K", help="trials in the leaderboard (10)"
    )
    _add_debug(report)
    report.set_defaults(handler=_report)
    return parser


def _doctor(args: argparse.Namespace) -> int:
    from kt_pipeline.doctor import diagnose

    diagnosis = diagnose()
    print(json.dumps(diagnosis.to_json(), indent=2) if args.json else diagnosis.format())
    return 0 if diagnosis.usable else 1


def _report(args: argparse.Namespace) -> int:
    from kt_pipeline.report import write_report

    print(write_report(args.experiment_dir, top_k=args.top).to_text())
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    for dest, key, text in _SHORTHANDS:
        value = getattr(args, dest, None)
        if value is not None:
            quoted = text or isinstance(value, str)
            overrides.append(f"{key}={json.dumps(value) if quoted else value}")
    if getattr(args, "verbose", False):
        overrides.append("runtime.verbose=true")
    if getattr(args, "insecure", False):
        overrides.append("runtime.oracle_insecure=true")
    return overrides


def _search(args: argparse.Namespace) -> int:
    from kt_pipeline.config import load_config
    from kt_pipeline.pipeline import run_search

    config = load_config(args.config, _overrides(args))
    if config.tuner.time_budget and (args.workers is not None or args.role is not None):
        raise UserInputError(
            "`tuner.time_budget` is not supported in a parallel search yet (--workers, "
            f"--role). Received: {config.tuner.time_budget:g} s"
        )
    if args.workers is not None:
        return _launch(args, config)
    if args.role == "worker":
        if args.overwrite:
            raise UserInputError("`--overwrite` is for the chief; a worker never discards")
        worker_id = args.worker_id or f"worker-{socket.gethostname()}-{os.getpid()}"
        if "chief" in worker_id or not re.fullmatch(r"[A-Za-z0-9._-]+", worker_id):
            raise UserInputError(
                "`--worker-id` must be letters, digits, '.', '_' or '-', without 'chief'. "
                f"Received: {worker_id!r}"
            )
        summary = run_search(config, role="worker", worker_id=worker_id, started=args.started)
        print(f"worker {worker_id}: search over after {summary.seconds:.1f} s")
        return 0
    summary = run_search(
        config, overwrite=args.overwrite, role=args.role or "standalone", started=args.started
    )
    _print_summary(summary)
    return 0


def _launch(args: argparse.Namespace, config: object) -> int:
    from kt_pipeline.config import PipelineConfig
    from kt_pipeline.launcher import free_loopback_address, launch

    assert isinstance(config, PipelineConfig)
    if args.workers < 1:
        raise UserInputError(f"`--workers` must be >= 1. Received: {args.workers}")
    if args.role is not None:
        raise UserInputError(
            f"`--workers` starts the chief and the workers itself; drop `--role`. "
            f"Received: --role {args.role}"
        )
    address = args.oracle or free_loopback_address()
    # Every child reads the same options; the launcher adds --role and --oracle.
    shared = [
        "--config" if args.config else "",
        args.config or "",
        *[item for text in _overrides(args) for item in ("--set", text)],
    ]
    if args.debug:
        shared.append("--debug")
    again = ["kt-pipeline", *(a for a in args.argv if a != "--overwrite")]
    return launch(
        [arg for arg in shared if arg],
        workers=args.workers,
        address=address,
        lease_seconds=config.runtime.worker_lease_seconds,
        overwrite=args.overwrite,
        resume_command=f"`{shlex.join(again)}`",
    )


def _describe(directory: str) -> int:
    from kt_pipeline.model_card import GOOD_MARKER, format_card, load_card

    try:
        card = load_card(directory)
    except (OSError, ValueError) as error:
        raise UserInputError(
            f"--describe {directory!r} is not a kt-pipeline export with a model card "
            "(no readable assets.extra/model_card.json)"
        ) from error
    print(format_card(card, good=(Path(directory) / GOOD_MARKER).is_file()))
    return 0


def _export(args: argparse.Namespace) -> int:
    from kt_pipeline.config import load_config
    from kt_pipeline.experiment_files import CONFIG_FILE
    from kt_pipeline.finish import export_best
    from kt_pipeline.held_out import format_scores
    from kt_pipeline.lock import experiment_lock

    if args.describe:
        return _describe(args.describe)
    config_file = args.config
    if config_file is None:
        experiment = Path(args.experiment_dir or "experiments/default")
        config_file = experiment / CONFIG_FILE
        if not config_file.is_file():
            raise UserInputError(
                f"experiment directory {str(experiment)!r} has no "
                f"{CONFIG_FILE}; pass --config or --experiment-dir"
            )
    config = load_config(config_file, _overrides(args))
    with experiment_lock(Path(config.runtime.experiment_dir), command="export"):
        exported = export_best(config)
    if exported is None:
        raise UserInputError(
            f"experiment {config.runtime.experiment_dir!r} has no completed trial to export"
        )
    print(f"SavedModel: {exported.directory}")
    scores = format_scores(exported.test_scores, exported.test_intervals)
    print(f"Held-out test (reloaded SavedModel): {scores}")
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from kt_pipeline.config import load_config
    from kt_pipeline.experiment_files import LR_FIND_PLOT
    from kt_pipeline.lr_find import find_learning_rates, union_range

    config = load_config(args.config, _overrides(args))
    plot = Path(args.output or Path(config.runtime.experiment_dir) / LR_FIND_PLOT)
    optimizers = None if args.per_optimizer else [None]
    results = find_learning_rates(config, optimizers=optimizers, plot_path=plot)
    print(f"{'optimizer':<10} {'steepest':>10} {'min loss':>10}   suggested range")
    for result in results:
        low, high = result.suggested
        print(
            f"{result.optimizer:<10} {result.steepest:>10.3g} {result.minimum:>10.3g}"
            f"   [{low:.3g}, {high:.3g}]"
        )
    low, high = union_range(results)
    print(f"Suggested search.learning_rate = [{low:.3g}, {high:.3g}]")
    if len(results) > 1:  # what the default search sets: a range per optimizer
        ranges = ", ".join(
            f"{r.optimizer} = [{r.suggested[0]:.3g}, {r.suggested[1]:.3g}]" for r in results
        )
        print(f"Per optimizer: search.optimizer_learning_rates = {{ {ranges} }}")
    print(f"Plot: {plot}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from kt_pipeline.config import load_config
    from kt_pipeline.plan import plan_search

    if args.calibration_epochs < 0 or args.calibration_epochs == 1:
        raise UserInputError(
            "`--calibration-epochs` must be 0 or >= 2 (a steady epoch follows the first). "
            f"Received: {args.calibration_epochs}"
        )
    config = load_config(args.config, _overrides(args))
    print(plan_search(config, calibration_epochs=args.calibration_epochs).format())
    return 0


def _predict(args: argparse.Namespace) -> int:
    from hypermodels.features import TabularSchema
    from kt_pipeline.data import read_rows
    from kt_pipeline.export import load_model_info, prediction_table

    model_dir = Path(args.model)
    try:
        schema = TabularSchema.from_json(load_model_info(model_dir)["schema"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(
            f"--model {args.model!r} is not a kt-pipeline export (no readable model_info.json)"
        ) from error
    frame = read_rows(args.input, kinds={c.name: c.kind for c in schema.columns})
    prediction_table(model_dir, frame).to_csv(args.output, index=False)
    print(f"wrote {len(frame)} predictions to {args.output}")
    return 0


def _print_summary(summary: object) -> None:
    from kt_pipeline.held_out import format_scores
    from kt_pipeline.pipeline import SearchSummary

    assert isinstance(summary, SearchSummary)
    print()
    print(
        f"Search finished in {summary.seconds:.1f} s: {summary.trials} trials "
        f"({summary.completed_trials} completed), {summary.task} task, "
        f"objective {summary.objective}"
    )
    if summary.best_trial_id is None:
        print("No trial completed: nothing to export.")
    else:
        print(f"Best trial {summary.best_trial_id}: validation score {summary.best_score:.4f}")
        for name, value in sorted(summary.best_hyperparameters.items()):
            if not name.startswith("tuner/"):
                print(f"  {name:<20} {value}")
        if len(summary.exported_trial_ids) > 1:
            print(
                f"Exported model: a weighted average of {len(summary.exported_trial_ids)} "
                f"trials' models ({', '.join(summary.exported_trial_ids)}), chosen on the "
                "rows the trials were scored on (export.ensemble)"
            )
        if summary.exported_refit:
            served = "averaged with" if summary.exported_refit == "blend" else "replaced by"
            print(
                f"Exported model {served} the same configurations trained again on the "
                "training and validation rows (export.refit)"
            )
        scores = format_scores(summary.test_scores, summary.test_intervals)
        print(f"Held-out test (reloaded SavedModel): {scores}")
    if summary.stopped_by_time_budget:
        print("The time budget (tuner.time_budget) ended the search; resume with more time")
        print("to run the remaining trials.")
    print(f"SavedModel:       {summary.export_dir or 'not exported'}")
    print(f"Results table:    {summary.results_file}")
    print(f"TensorBoard logs: {summary.tensorboard_dir}")
    print(f"Open them with:   tensorboard --logdir {summary.tensorboard_dir}")
    print(f"Report:           kt-pipeline report {summary.experiment_dir}")


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``docker stop``, Kubernetes), raised as the interrupt a search already
    stops on cleanly: the running trial is left to run again on resume."""


class _StopOnSignal:
    """SIGTERM and SIGINT interrupt the command once; a second signal exits at once."""

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            os._exit(128 + signum)
        self.received = signum
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _disk_full_line(error: OSError) -> str:
    if isinstance(error, DiskFullError):
        return str(error)
    where = f" writing {error.filename!r}" if error.filename else ""
    return (
        f"the disk is full{where} ({error.strerror or error}): free some space and run the "
        "same command again; what was finished is kept"
    )


def _stopped(args: argparse.Namespace, signum: int) -> int:
    name = signal.Signals(signum).name
    if args.command == "search":
        again = shlex.join(["kt-pipeline", *(a for a in args.argv if a != "--overwrite")])
        print(
            f"kt-pipeline: stopped by {name}; the search so far is kept, and `{again}` resumes it",
            file=sys.stderr,
        )
    else:
        print(f"kt-pipeline: stopped by {name}", file=sys.stderr)
    return 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (0 ok, 1 search aborted by failing trials or
    an export that failed its verification, 2 bad input, 130 interrupted by Ctrl-C,
    143 stopped by SIGTERM)."""
    started = time.monotonic()  # before TensorFlow's import: a time budget counts it
    args = _parser().parse_args(argv)
    args.started = started
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # TensorFlow's Python logger would otherwise pass its chatter (INFO lines, and a
    # retracing warning that every new trial's model triggers) to our handler.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    stop = _StopOnSignal()
    previous = (  # handlers can only be set from the main thread
        {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    try:
        loud = getattr(args, "debug", False) or getattr(args, "verbose", False)
        start_tensorflow(show_native=True if loud else None)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UserInputError as error:
        if args.debug:
            traceback.print_exc()
        print(f"kt-pipeline: error: {error}", file=sys.stderr)
        return 2
    except SearchAbortedError as error:
        if args.debug:
            traceback.print_exc()
        print(f"kt-pipeline: error: {error}", file=sys.stderr)
        return 1
    except ExportVerificationError as error:
        if args.debug:
            traceback.print_exc()
        print(f"kt-pipeline: export not verified: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if not is_disk_full(error):
            raise
        if args.debug:
            traceback.print_exc()
        print(f"kt-pipeline: error: {_disk_full_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _stopped(args, stop.received or signal.SIGINT)
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
