"""The experiment config: one frozen, validated tree of dataclasses.

Values are resolved in a fixed order: the defaults below, then a TOML file, then
``--set section.key=value`` overrides. Every value is type-checked and range-checked
once, when the tree is built, so the rest of the pipeline can trust it. The resolved
tree is saved beside the results (``config.toml``) so a run can be read and repeated.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import tomllib
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from hypermodels.mlp import TASKS as MODEL_TASKS
from hypermodels.mlp import (
    SearchSpace,
)
from hypermodels.optimizers import OPTIMIZERS
from kt_pipeline.bohb import MODELS as BOHB_MODELS
from kt_pipeline.ensemble import MAX_ENSEMBLE
from kt_pipeline.errors import UserInputError
from kt_pipeline.splits import SplitSpec
from kt_pipeline.strategy import MIXED_PRECISION, STRATEGIES
from kt_pipeline.tuners import ALGORITHMS as TUNERS
from kt_pipeline.tuners import FIRST_TRIALS, TunerSettings

__all__ = [
    "DataConfig",
    "ExportConfig",
    "PipelineConfig",
    "RuntimeConfig",
    "SearchConfig",
    "TunerConfig",
    "config_to_dict",
    "load_config",
    "parse_duration",
    "save_config",
]

TASKS = ("auto", *MODEL_TASKS)  # auto: inferred from the label
BATCH_SIZE_IS = ("global", "per_replica")
DIRECTIONS = ("auto", "min", "max")
#: What `ExportConfig.refit` serves: ``blend`` where it is cheap enough (``auto``), the
#: searched and retrained ensembles averaged, the retrained one alone, or the searched one.
REFIT_MODES = ("auto", "blend", "replace", "off")


def _fail(field: str, must: str, value: Any) -> UserInputError:
    return UserInputError(f"`{field}` must be {must}. Received: {value!r}")


def _check_choice(field: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        hint = difflib.get_close_matches(value, allowed, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserInputError(
            f"`{field}` must be one of {', '.join(allowed)}. Received: {value!r}{suggestion}"
        )


def _check_range(
    field: str, bounds: tuple[float, float], *, low: float, high: float, log: bool = False
) -> None:
    lo, hi = bounds
    if lo > hi:
        raise UserInputError(
            f"`{field}` must be [min, max] with min <= max. Received: {list(bounds)}"
        )
    if lo < low or hi > high:
        raise _fail(field, f"within [{low}, {high}]", list(bounds))
    if log and lo <= 0:
        raise _fail(field, "> 0 at both ends (it is searched on a log scale)", list(bounds))


def _check_setting(field: str, value: Any, rules: Mapping[str, Any]) -> None:
    """Checks a search-space value against the rules its field declares
    (`hypermodels.mlp.SearchSpace`)."""
    if "range" in rules:
        low, high = rules["range"]
        _check_range(field, value, low=low, high=high, log=rules.get("log", False))
    elif "choice" in rules:
        _check_choice(field, value, rules["choice"])
    elif "choices" in rules:
        if not value:
            raise _fail(field, "a non-empty list", list(value))
        for one in value:
            _check_choice(field, one, rules["choices"])
    elif rules.get("flags"):
        if not value or any(not isinstance(v, bool) for v in value):
            raise _fail(field, "a non-empty list of true/false", list(value))
    elif rules.get("fractions"):
        if not value or any(not 0.0 <= v < 1.0 for v in value):
            raise _fail(field, "a non-empty list of values in [0, 1)", list(value))
    elif rules.get("counts") and (not value or any(v < 1 for v in value)):
        raise _fail(field, "a non-empty list of integers >= 1", list(value))


def _check_positive(field: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise _fail(field, ">= 0" if allow_zero else "> 0", value)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the rows come from and how they are split.

    Attributes:
        source: ``builtin:<name>`` (a scikit-learn bundled set: digits, breast_cancer,
            wine, iris, diabetes) or a path to a ``.csv``, ``.parquet`` or ``.npz`` file.
        label: The label column of a CSV/Parquet file (ignored for built-in and NPZ data).
        task: ``auto`` infers binary/multiclass/regression from the label.
        split: How rows are cut into train, validation and test (`kt_pipeline.splits`):
            ``random``, ``time:COLUMN`` (the latest rows are the test rows),
            ``group:COLUMN[,COLUMN...]`` (no group in two parts) or ``column:COLUMN``
            (the column names each row's part). Choose the one that matches how the
            model will be used: a random split of rows that share a day or an entity
            scores memory of them, which later rows and new entities do not get.
        validation_fraction: Share of rows the search validates on (none with `folds`).
        test_fraction: Share of rows held out and scored once, on the export.
        folds: 1 validates each trial on the validation rows. k > 1 cross-validates
            it instead: the validation rows join the training rows, each trial trains k
            models on k folds of them (cut as `split` cuts the table:
            `kt_pipeline.splits.TrialFolds`) and is scored on their out-of-fold
            predictions, and the export serves the chosen trials' fold models
            averaged. Every score then rests on all the training rows instead of a
            sixth of them, for about k times the training. Needs ``search.members``
            = 1.
        folds_auto: Size `folds` for the table (`kt_pipeline.sizing.folds_for`): on
            by default, it cross-validates a group split whose validation part would
            hold few groups. `folds` set by hand turns it off, ``folds = "auto"`` on.
        categorical: Columns to treat as categorical whatever their values.
        numeric: Columns to treat as numeric whatever their values.
        min_frequency: A categorical value seen fewer times than this in the training
            split shares one bucket with unseen values (`hypermodels.fit_schema`);
            1 keeps every value.
        screen_identifiers: Before the search, leave out of the network each
            high-cardinality column whose levels explain less than
            `hypermodels.features.LEVEL_MIN_SHARE` of what the other columns' main
            effects leave, out of fold on the split's folds
            (`hypermodels.features.screen_identifiers`): an identifier that carries
            nothing then costs nothing, as users leave order ids and codes in their
            tables. The column stays an input of the export.
    """

    source: str = "builtin:digits"
    label: str = ""
    task: str = "auto"
    split: str = "random"
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    folds: int = 1
    folds_auto: bool = True
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    min_frequency: int = 1
    screen_identifiers: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.min_frequency, bool) or not isinstance(self.min_frequency, int):
            raise _fail("data.min_frequency", "an integer >= 1", self.min_frequency)
        if self.min_frequency < 1:
            raise _fail("data.min_frequency", "an integer >= 1", self.min_frequency)
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise _fail("data.categorical", "disjoint from data.numeric", both)
        if not self.source:
            raise _fail("data.source", "a built-in name or a file path", self.source)
        _check_choice("data.task", self.task, TASKS)
        if self.folds < 1:
            raise _fail("data.folds", "an integer >= 1", self.folds)
        SplitSpec.parse(self.split)
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise _fail(f"data.{name}", "strictly between 0 and 1", value)
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise _fail(
                "data.validation_fraction + data.test_fraction",
                "< 0.9 so that training keeps rows",
                self.validation_fraction + self.test_fraction,
            )


@dataclasses.dataclass(frozen=True)
class SearchConfig(SearchSpace):
    """The search space (every field of `hypermodels.SearchSpace`, checked against the
    rules each declares) and the HyperModel.

    A ``[min, max]`` range with min == max (or a single value) fixes a hyperparameter;
    a one-element list of choices fixes a choice.

    Attributes:
        hypermodel: Import path ``module:ClassName`` of the HyperModel to tune. It is
            built with the keyword arguments `MLPHyperModel` takes (schema, task,
            target, train_size, max_epochs, space, objective, execution).
        learning_rate_auto: Before the search, run the learning-rate range test
            (`kt_pipeline.lr_find`) for every optimizer of the space and give each
            optimizer its suggested range in `optimizer_learning_rates` (and
            `learning_rate` the union of them). On by default: at equal budget it
            beat one shared range on the benchmark's largest data set on 9 of 10
            seeds and was level on the two small ones (README, "Search quality"); a
            `learning_rate` or `optimizer_learning_rates` set by hand turns it off,
            ``learning_rate = "auto"`` turns it on.
        batch_sizes_auto: Size `batch_sizes` for the training rows
            (`kt_pipeline.sizing.batch_sizes_for`), so that a large table trains in
            hundreds of steps per epoch, not thousands; `batch_sizes` set by hand turns
            it off, ``batch_sizes = "auto"`` turns it on.
        members_auto: Size `members` for the training rows
            (`kt_pipeline.sizing.members_for`); `members` set by hand turns it off,
            ``members = "auto"`` turns it on.
    """

    hypermodel: str = "hypermodels:MLPHyperModel"
    learning_rate_auto: bool = True
    batch_sizes_auto: bool = True
    members_auto: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(SearchSpace):
            _check_setting(f"search.{field.name}", getattr(self, field.name), field.metadata)
        for name, bounds in self.optimizer_learning_rates.items():
            field_name = f"search.optimizer_learning_rates.{name}"
            _check_choice(field_name, name, OPTIMIZERS)
            _check_range(field_name, bounds, low=0.0, high=10.0, log=True)
        module, sep, attribute = self.hypermodel.partition(":")
        if not sep or not module or not attribute:
            raise _fail("search.hypermodel", "an import path 'module:ClassName'", self.hypermodel)


@dataclasses.dataclass(frozen=True)
class TunerConfig(TunerSettings):
    """The search algorithm and its budget.

    Attributes:
        algorithm: ``hyperband``, ``bayesian``, ``random``, ``bohb`` (Hyperband's
            brackets with TPE proposals, `kt_pipeline.bohb`) or ``grid`` (every
            combination of the space's values; `kt-pipeline plan` counts them).
        objective: Metric to optimise; ``auto`` is ``val_accuracy`` for multiclass,
            ``val_auc`` for binary and ``val_loss`` for regression.
        direction: ``min``, ``max`` or ``auto`` (from the metric's name).
        max_trials: Trials to run; 0 means Hyperband's own schedule, the whole grid,
            or 20 for the other algorithms. A positive value caps them all.
        max_epochs: Epochs of the longest trial; 0 sizes it for the training rows
            (`kt_pipeline.sizing.max_epochs_for`: 20 up to 100,000 rows, fewer above).
        factor: Hyperband's reduction factor.
        hyperband_iterations: Times Hyperband runs its whole schedule.
        executions_per_trial: Models trained per trial (their scores are averaged).
        max_consecutive_failed_trials: The search aborts after this many trials in a row
            fail with an error; diverged trials (NaN/inf loss) never count.
        max_crashes_per_trial: A trial that killed the process (out of memory, a
            segfault) this many times is recorded as failed when the search resumes.
        bohb_min_points: With ``bohb``, completed trials a budget needs before its
            model proposes configurations; 0 means the number of hyperparameters + 1,
            as in BOHB (more than the default schedule's 30 trials ever give one
            budget, so the default search samples at random as Hyperband does).
        bohb_model: With ``bohb``, the density model behind its proposals: ``kde``
            (BOHB's own kernels) or ``optuna_tpe`` (Optuna's multivariate TPE sampler).
        time_budget: Wall-clock seconds for the whole command (0: no limit), written
            as a number of seconds or a duration (``90s``, ``10m``, ``1.5h``). No trial
            starts that the time left cannot fit, a running trial stops at the epoch
            that uses it up, and the best model so far is exported and scored.
        first_trial: ``recommended``: a fresh search's first trial is the
            hypermodel's known-good configuration (`hypermodels.mlp.STARTING_POINT`:
            two ReLU layers of 256, Adam at the middle of its learning-rate range, a
            cosine schedule), then the algorithm samples; ``random``: every trial is
            the algorithm's.
    """

    objective: str = "auto"
    direction: str = "auto"
    time_budget: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("tuner.algorithm", self.algorithm, TUNERS)
        _check_positive("tuner.time_budget", self.time_budget, allow_zero=True)
        _check_choice("tuner.first_trial", self.first_trial, FIRST_TRIALS)
        _check_choice("tuner.bohb_model", self.bohb_model, BOHB_MODELS)
        if self.bohb_min_points != 0 and self.bohb_min_points < 3:
            raise _fail("tuner.bohb_min_points", "0 (automatic) or >= 3", self.bohb_min_points)
        _check_choice("tuner.direction", self.direction, DIRECTIONS)
        if not self.objective:
            raise _fail("tuner.objective", "a metric name or 'auto'", self.objective)
        _check_positive("tuner.max_trials", self.max_trials, allow_zero=True)
        _check_positive("tuner.max_epochs", self.max_epochs, allow_zero=True)
        for name in (
            "hyperband_iterations",
            "executions_per_trial",
            "max_consecutive_failed_trials",
            "max_crashes_per_trial",
        ):
            _check_positive(f"tuner.{name}", getattr(self, name))
        if self.factor < 2:
            raise _fail("tuner.factor", ">= 2", self.factor)


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where the experiment lives and what it runs on.

    Attributes:
        experiment_dir: Folder for trials, TensorBoard logs, results and the export.
        seed: Fixes the data split, the search's sampling and weight initialisation.
        strategy: ``auto`` (MirroredStrategy with more than one GPU, else the default),
            ``default``, ``one_device``, ``mirrored`` or ``multi_worker_mirrored``
            (the cluster comes from ``TF_CONFIG``).
        devices: Devices for ``one_device``/``mirrored``, e.g. ``["/gpu:0", "/gpu:1"]``;
            empty means all GPUs (or all CPUs when there is no GPU).
        memory_growth: Let GPU memory grow as needed instead of reserving it all.
        mixed_precision: ``none``, ``mixed_float16`` (GPU) or ``mixed_bfloat16`` (CPU);
            the output layer and the preprocessing stay float32.
        batch_size_is: Whether the searched batch size is the ``global`` batch of one
            step or the ``per_replica`` batch (multiplied by the replica count). Schedules
            count steps of the global batch either way.
        oracle_address: ``HOST:PORT`` workers connect to in a parallel search
            (``kt-pipeline search --workers/--role``), and the chief binds unless
            `oracle_bind` says otherwise.
        oracle_bind: ``HOST:PORT`` the chief binds when it differs from the address
            workers dial (``0.0.0.0:8470`` behind a Service or a NAT); empty: the same.
        oracle_token_file: A file whose first line is the search's shared secret, when
            ``KT_PIPELINE_ORACLE_TOKEN`` is not set: every call to the chief must carry
            it. ``--workers`` makes one for each search by itself.
        oracle_insecure: Let a chief bind beyond loopback without a token.
        oracle_tls_cert: The chief's PEM certificate: with `oracle_tls_key`, the chief
            serves over TLS. It must name the host the workers dial.
        oracle_tls_key: The chief's PEM private key.
        oracle_tls_ca: The PEM certificate the workers trust the chief's against: with
            it, workers talk TLS.
        worker_lease_seconds: A worker silent for this long is presumed dead and its
            trial goes to another worker; workers send a heartbeat 5 times per lease.
        verbose: Show Keras's per-epoch output.
        steps_per_execution: Training steps per call into the compiled function; 0
            picks min(32, steps per epoch).
        jit_compile: Compile trials with XLA (off: on CPU it made short trials slower).
        fused_optimizers: Optimizers update each weight with one TensorFlow kernel
            (Adam, AdamW, SGD, RMSprop) or plain TensorFlow ops (Adagrad, Nadam),
            which trace and step faster than Keras's per-op update
            (`hypermodels.fused_optimizers`); off, Keras's own optimizer classes.
        graph_optimizer: TensorFlow's graph optimizer (Grappler) for each trial's
            functions: ``auto`` turns it off without a GPU, where re-optimising every
            new trial's graph cost more than it saved, and on with one.
        deterministic: Turn on TensorFlow op determinism, so the same command gives
            the same metrics (slower on GPU, where some ops lose their fast kernels).
    """

    experiment_dir: str = "experiments/default"
    seed: int = 42
    strategy: str = "auto"
    devices: tuple[str, ...] = ()
    memory_growth: bool = True
    mixed_precision: str = "none"
    batch_size_is: str = "global"
    oracle_address: str = "127.0.0.1:8470"
    oracle_bind: str = ""
    oracle_token_file: str = ""
    oracle_insecure: bool = False
    oracle_tls_cert: str = ""
    oracle_tls_key: str = ""
    oracle_tls_ca: str = ""
    worker_lease_seconds: float = 60.0
    verbose: bool = False
    steps_per_execution: int = 0
    jit_compile: bool = False
    fused_optimizers: bool = True
    graph_optimizer: str = "auto"
    deterministic: bool = False

    def __post_init__(self) -> None:
        if not self.experiment_dir:
            raise _fail("runtime.experiment_dir", "a folder path", self.experiment_dir)
        _check_positive("runtime.seed", self.seed, allow_zero=True)
        _check_choice("runtime.strategy", self.strategy, STRATEGIES)
        _check_choice("runtime.graph_optimizer", self.graph_optimizer, ("auto", "on", "off"))
        _check_positive("runtime.steps_per_execution", self.steps_per_execution, allow_zero=True)
        if self.strategy == "one_device" and len(self.devices) > 1:
            raise _fail(
                "runtime.devices",
                "at most one device with strategy 'one_device'",
                list(self.devices),
            )
        if self.strategy in ("auto", "default", "multi_worker_mirrored") and self.devices:
            raise _fail(
                "runtime.devices",
                "empty unless runtime.strategy is 'one_device' or 'mirrored'",
                list(self.devices),
            )
        _check_choice("runtime.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_choice("runtime.batch_size_is", self.batch_size_is, BATCH_SIZE_IS)
        if self.batch_size_is == "per_replica" and self.strategy in ("default", "one_device"):
            raise _fail(
                "runtime.batch_size_is",
                "'global' with a single-replica strategy ('default', 'one_device')",
                self.batch_size_is,
            )
        for name in ("oracle_address", "oracle_bind"):
            value = getattr(self, name)
            host, sep, port = value.rpartition(":")
            if name == "oracle_bind" and not value:
                continue
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise _fail(f"runtime.{name}", "HOST:PORT with a port in 1..65535", value)
        if bool(self.oracle_tls_cert) != bool(self.oracle_tls_key):
            given = "oracle_tls_cert" if self.oracle_tls_cert else "oracle_tls_key"
            raise _fail(
                f"runtime.{given}",
                "set together with runtime.oracle_tls_cert and runtime.oracle_tls_key",
                getattr(self, given),
            )
        if self.worker_lease_seconds < 1:
            raise _fail("runtime.worker_lease_seconds", ">= 1", self.worker_lease_seconds)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The SavedModel export of the search's result.

    Attributes:
        enabled: Export after the search.
        version: Folder number under ``export/``; 0 picks the next free number.
        ensemble: The most distinct configurations' models the export's ensemble may
            hold, chosen greedily on the validation split (see `kt_pipeline.ensemble`);
            1 exports the best trial's model alone.
        verify_in_fresh_process: Verify the export in a new interpreter that imports
            none of our packages, instead of reloading it in this one (`kt_pipeline.export`).
        refit: Once the ensemble is chosen, train each member's configuration again
            from scratch on the training and validation rows together, for the epochs
            its trial took to reach its best score: the search needed the validation
            rows to choose, the served model need not leave them out. ``blend`` serves
            the average of the searched and the retrained ensembles, ``replace`` the
            retrained one alone, ``off`` the searched one; ``auto`` blends where the
            refit costs at most `finish.REFIT_MAX_SHARE` of the search's training
            time, and under a time split (``data.split = time:...``) replaces whatever
            it costs, as the searched models know only the oldest rows (`REFIT_MODES`;
            true and false mean ``replace`` and ``off``, as before the modes). The test rows stay
            unseen, so the held-out score stays honest; under a time split the members
            are then trained once more with them (`finish.export_best`). Skipped
            under a time budget, and by ``auto`` above 100,000 training rows
            (`kt_pipeline.sizing.refit_for`).
    """

    enabled: bool = True
    version: int = 0
    ensemble: int = 3
    verify_in_fresh_process: bool = False
    refit: str = "auto"

    def __post_init__(self) -> None:
        _check_positive("export.version", self.version, allow_zero=True)
        _check_choice("export.refit", self.refit, REFIT_MODES)
        if not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise _fail("export.ensemble", f"between 1 and {MAX_ENSEMBLE}", self.ensemble)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The whole experiment config; the only object the pipeline and the CLI see."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    tuner: TunerConfig = dataclasses.field(default_factory=TunerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if self.data.folds > 1 and tuple(self.search.members) != (1,) and not self.data.folds_auto:
            raise _fail(
                "search.members", "1 with data.folds > 1 (each fold is its own model)",
                list(self.search.members),
            )  # fmt: skip


_SECTIONS: dict[str, Any] = typing.get_type_hints(PipelineConfig)


def _coerce_scalar(field: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _fail(field, "true or false", value)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(field, "an integer", value)
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _fail(field, "a finite number", value)
            return float(value)
        raise _fail(field, "a number", value)
    if kind is str:
        if isinstance(value, str):
            return value
        raise _fail(field, "a string", value)
    raise TypeError(f"unsupported config type {kind} for {field}")  # a bug, not user input


def _coerce(field: str, value: Any, annotation: Any) -> Any:
    """Checks one value against its dataclass annotation and converts lists to tuples."""
    if typing.get_origin(annotation) is collections.abc.Mapping:  # a TOML table
        if not isinstance(value, dict):
            raise _fail(field, "a table of name = value", value)
        _, item = typing.get_args(annotation)
        return {str(key): _coerce(f"{field}.{key}", v, item) for key, v in value.items()}
    if typing.get_origin(annotation) is not tuple:
        return _coerce_scalar(field, value, annotation)
    args = typing.get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis:  # a list of choices
        items = list(value) if isinstance(value, list | tuple) else [value]
        return tuple(_coerce_scalar(field, item, args[0]) for item in items)
    # A fixed-length [min, max] range; a single value fixes it.
    if not isinstance(value, list | tuple):
        value = [value, value]
    if len(value) != len(args):
        raise _fail(field, f"a list of {len(args)} values [min, max] or a single value", value)
    return tuple(_coerce_scalar(field, item, kind) for item, kind in zip(value, args, strict=True))


def _unknown(field: str, key: str, known: Iterable[str]) -> UserInputError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    suggestion = f"; did you mean `{field}{hint[0]}`?" if hint else ""
    return UserInputError(f"unknown config key `{field}{key}`{suggestion}")


def _learning_rate_auto(values: dict[str, Any]) -> dict[str, Any]:
    """Turns ``search.learning_rate = "auto"`` into ``learning_rate_auto = true``."""
    value = values.get("learning_rate")
    if not isinstance(value, str):
        return values
    if value != "auto":
        raise _fail("search.learning_rate", '[min, max], a single number or "auto"', value)
    values = {k: v for k, v in values.items() if k != "learning_rate"}
    values["learning_rate_auto"] = True
    return values


def _learning_rates_by_hand(values: dict[str, Any]) -> dict[str, Any]:
    """Learning rates set by hand replace the range test (the default)."""
    by_hand = "learning_rate" in values or "optimizer_learning_rates" in values
    if by_hand and "learning_rate_auto" not in values:
        values = {**values, "learning_rate_auto": False}
    return values


def _auto_or_by_hand(
    values: dict[str, Any],
    name: str,
    *,
    section: str = "search",
    expected: str = "a list of integers >= 1",
) -> dict[str, Any]:
    """``<section>.<name> = "auto"`` sizes the field for the data (`kt_pipeline.sizing`);
    values set by hand are kept as they are (``<name>_auto`` says which)."""
    value = values.get(name)
    if isinstance(value, str):
        if value != "auto":
            raise _fail(f"{section}.{name}", f'{expected} or "auto"', value)
        values = {k: v for k, v in values.items() if k != name}
        return {**values, f"{name}_auto": True}
    if value is not None and f"{name}_auto" not in values:
        values = {**values, f"{name}_auto": False}
    return values


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(field: str, value: Any) -> Any:
    """Turns a duration such as ``"90s"``, ``"10m"`` or ``"1.5h"`` into seconds; numbers
    (seconds already) pass through for the type check."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        raise _fail(field, "a duration such as 90s, 10m or 1.5h", value) from None
    if not math.isfinite(seconds):
        raise _fail(field, "a duration such as 90s, 10m or 1.5h", value)
    return seconds


def _refit_mode(values: dict[str, Any]) -> dict[str, Any]:
    """``export.refit = true/false`` (configs saved before the modes) means
    ``replace``/``off``."""
    value = values.get("refit")
    if isinstance(value, bool):
        values = {**values, "refit": "replace" if value else "off"}
    return values


def _build(raw: Mapping[str, Any]) -> PipelineConfig:
    sections: dict[str, Any] = {}
    for section, section_type in _SECTIONS.items():
        values = raw.get(section, {})
        if section == "search":
            values = _learning_rate_auto(values)
            values = _learning_rates_by_hand(values)
            values = _auto_or_by_hand(values, "batch_sizes")
            values = _auto_or_by_hand(values, "members")
        if section == "data":
            values = _auto_or_by_hand(values, "folds", section="data", expected="an integer >= 1")
        if section == "export":
            values = _refit_mode(values)
        if section == "tuner" and "time_budget" in values:
            values = {
                **values,
                "time_budget": parse_duration("tuner.time_budget", values["time_budget"]),
            }
        hints = typing.get_type_hints(section_type)
        kwargs = {
            key: _coerce(f"{section}.{key}", value, hints[key]) for key, value in values.items()
        }
        sections[section] = section_type(**kwargs)
    return PipelineConfig(**sections)


#: Settings that were removed, each with the one value that is what every search now
#: does: a saved config holding it still loads, and any other value is refused.
_REMOVED = {
    # Measured worse at equal budget (benchmarks/README.md, `pipeline_trial_schedule`).
    "search.schedule_horizon": "max_epochs",
}


def _check_removed(field: str, value: Any) -> None:
    if value != _REMOVED[field]:
        raise _fail(
            field,
            f"absent (the setting was removed; every search now does {_REMOVED[field]!r})",
            value,
        )


def _merge(raw: dict[str, dict[str, Any]], updates: Mapping[str, Any], origin: str) -> None:
    for section, values in updates.items():
        if section not in _SECTIONS:
            raise _unknown("", section, _SECTIONS)
        if not isinstance(values, dict):
            raise UserInputError(
                f"`{section}` in {origin} must be a table [{section}]. Received: {values!r}"
            )
        known = typing.get_type_hints(_SECTIONS[section])
        for key, value in values.items():
            if f"{section}.{key}" in _REMOVED:
                _check_removed(f"{section}.{key}", value)
                continue
            if key not in known:
                raise _unknown(f"{section}.", key, known)
            raw.setdefault(section, {})[key] = value
            auto = f"{key}_auto"
            if auto in known and auto not in values:  # set by hand over a file's "auto"
                raw[section].pop(auto, None)


def _parse_override(text: str) -> tuple[str, str, Any]:
    """Parses ``section.key=value``; the value is read as TOML, else as a bare string."""
    name, sep, value_text = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise UserInputError(f"`--set` takes section.key=value. Received: {text!r}")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return section, key, value


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    settings: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Resolves defaults, then a TOML file, then `settings`, then ``section.key=value``
    overrides.

    Args:
        path: A TOML config file.
        overrides: ``section.key=value`` texts, values read as TOML (the CLI's ``--set``).
        settings: ``{"section.key": value}`` with Python values (the Python API's).

    Raises:
        UserInputError: the file is missing or not TOML, a key is unknown, or a
            value has the wrong type or is out of range.
    """
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UserInputError(
                f"cannot read config file {str(path)!r}: {error.strerror or error}"
            ) from error
        try:
            _merge(raw, tomllib.loads(text), origin=str(path))
        except tomllib.TOMLDecodeError as error:
            raise UserInputError(f"config file {str(path)!r} is not valid TOML: {error}") from error
    for name, value in (settings or {}).items():
        section, dot, key = str(name).partition(".")
        if not dot or not section or not key:
            raise UserInputError(f"settings take 'section.key' names. Received: {name!r}")
        value = list(value) if isinstance(value, tuple) else value
        _merge(raw, {section: {key: value}}, origin="settings")
    for text in overrides:
        section, key, value = _parse_override(text)
        _merge(raw, {section: {key: value}}, origin="--set")
    return _build(raw)


def config_to_dict(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The config as plain TOML-able data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(value) if isinstance(value, tuple) else value

    return {
        section.name: {
            k: plain(v) for k, v in dataclasses.asdict(getattr(config, section.name)).items()
        }
        for section in dataclasses.fields(config)
    }


def save_config(config: PipelineConfig, path: str | Path) -> None:
    """Writes the resolved config as TOML, which `load_config` reads back unchanged;
    through a partial file renamed into place, so a full disk leaves the old one."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.partial")
    try:
        partial.write_text(tomli_w.dumps(config_to_dict(config)), encoding="utf-8")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
