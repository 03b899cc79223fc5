"""`MLPHyperModel`: a searchable multilayer perceptron for tabular data.

The model carries its own preprocessing (`hypermodels.features`), built from statistics
of the training split passed in, so nothing is adapted per trial and whatever exports
the model serves raw columns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from hypermodels.domains import BOOLEAN, CHOICE, FIXED, FLOAT, domain
from hypermodels.features import (
    HIGH_CARDINALITY,
    TabularSchema,
    build_inputs,
    build_preprocessing,
    high_cardinality_columns,
    value_columns,
)
from hypermodels.inputs import InputCache
from hypermodels.members import MemberAverage, member_adapter, member_heads
from hypermodels.numeric import (
    NUMERIC_EMBEDDINGS,
    NUMERIC_SCALINGS,
    PeriodicEmbedding,
    PiecewiseLinearEmbedding,
    bin_edges,
)
from hypermodels.optimizers import CLIPPING, OPTIMIZERS, build_optimizer, choose_learning_rate
from hypermodels.schedules import (
    DEFAULT_SCHEDULES,
    SCHEDULES,
    build_schedule,
    schedule_callbacks,
)
from hypermodels.step_functions import prepare_step_functions

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_SPACE",
    "EVALUATION_BATCH_SIZE",
    "INITIALIZERS",
    "INPUT_PIPELINES",
    "REGRESSION_LOSSES",
    "STARTING_POINT",
    "TASKS",
    "Execution",
    "MLPHyperModel",
    "SearchSpace",
    "Target",
]

#: Hidden-layer activations a search space may name (Keras activation names).
ACTIVATIONS = ("relu", "gelu", "selu", "elu", "tanh", "sigmoid", "swish", "leaky_relu")

#: Kernel initializers a search space may name (Keras initializer names).
INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
)

#: Supervised tasks the model has a head for.
TASKS = ("binary", "multiclass", "regression")

#: Losses for a regression head.
REGRESSION_LOSSES = ("mse", "mae", "huber")

#: Ways `fit` can feed the data.
INPUT_PIPELINES = ("tf_data", "numpy")

# Auto `steps_per_execution` stops here: beyond it the gain is small on CPU.
_MAX_STEPS_PER_EXECUTION = 32
#: Validation and prediction batches: larger than training batches, since evaluation
#: has no gradient noise to keep and bigger batches mean fewer steps.
EVALUATION_BATCH_SIZE = 2048

# A weight-penalty range that starts at 0 means "off, or log-uniform over this many
# decades below the upper bound".
_PENALTY_DECADES = 4


def _setting(default: Any, **rules: Any) -> Any:
    """A `SearchSpace` field and the rules its value must keep, which the pipeline's
    config checks (`kt_pipeline.config`) and its resume reads, so that a new option is
    declared here alone:

    * ``range=(low, high)`` (with ``log=True``: searched on a log scale): a
      ``(min, max)`` range within those bounds;
    * ``choices=ALLOWED``: a non-empty list of allowed names; ``choice=ALLOWED``: one;
    * ``flags``, ``fractions``, ``counts``: a non-empty list of true/false, of values
      in [0, 1), of integers >= 1;
    * ``before=VALUE``: an option added after experiments were first saved, with the
      value that runs such an experiment as it ran (`kt_pipeline.resume`).
    """
    return dataclasses.field(default=default, metadata=rules)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The ranges and choices `MLPHyperModel` searches.

    A ``(min, max)`` range with equal ends fixes the value. Defaults follow the MLP
    spaces of FCNet and LCBench, trimmed to what pays off on small tabular data.

    Attributes:
        num_layers: Hidden layers.
        units: Units per hidden layer.
        per_layer_units: Search units per layer (``units_0``, ``units_1``, ...) instead
            of one shared `units`.
        activations: Hidden activation.
        dropout: Dropout rate after each hidden layer.
        batch_norm: Whether to batch-normalise each hidden layer; ``(False, True)``
            searches both.
        kernel_initializers: Hidden-layer kernel initializer.
        l1: L1 kernel penalty (log scale). A range starting at 0 searches "off" or a
            log-uniform value up to the upper bound.
        l2: L2 kernel penalty, like `l1`.
        optimizers: Optimizer.
        learning_rate: Initial learning rate (log scale).
        optimizer_learning_rates: Optimizer name to its own learning-rate range,
            replacing `learning_rate` for that optimizer (`choose_learning_rate`); the
            pipeline's learning-rate range test fills it in.
        schedules: Learning-rate schedule.
        batch_sizes: Batch size.
        gradient_clipping: ``none``, ``norm`` (per variable) or ``global_norm``.
        clip_norm: Clipping norm (log scale) when clipping is on.
        early_stopping_patience: Epochs without improvement of the objective before a
            trial stops; 0 turns early stopping off.
        regression_loss: ``mse``, ``mae`` or ``huber`` (fixed: losses are not comparable).
        numeric_scalings: How numeric columns are scaled (`numeric.NUMERIC_SCALINGS`:
            ``standardize``, ``quantile`` to a normal, ``robust`` with smooth clipping).
        numeric_embeddings: How each numeric column is embedded
            (`numeric.NUMERIC_EMBEDDINGS`: ``none``, ``periodic``, ``piecewise_linear``).
        embedding_dims: Size of each numeric column's embedding.
        periodic_frequencies: Frequencies per column of a periodic embedding.
        periodic_sigma: Standard deviation of a periodic embedding's initial
            frequencies (log scale).
        piecewise_bins: Bins per column of a piecewise-linear embedding.
        adam_beta2: Adam's, AdamW's and Nadam's second-moment decay (Keras's 0.999;
            RealMLP's 0.95).
        label_smoothing: Label smoothing of a classifier's loss (RealMLP uses 0.1 when
            the objective is accuracy).
        high_cardinality: How a column with too many values to one-hot encode enters
            (`features.HIGH_CARDINALITY`: ``embedding``, ``frequency``, ``target``,
            ``hashing``, ``drop``); an identifier's embedding can memorise its rows, its
            frequency cannot.
        value_embeddings: Whether numeric columns whose rows mostly repeat a few
            hundred exact values also embed each value (`features.ValueIds`), as trees
            split on exact values; ``(False, True)`` searches both. Off by default: on
            the real-table benchmark it won on one table and lost on two.
        row_target_encoding: Whether the network also takes the target encoding of a
            row's group (`features.fit_row_codes`), on tables where one qualifies;
            searched by default, so that a key that helps on the training rows but not
            on the validation rows can be left out (`benchmarks/README.md`).
        members: Members of a shared-weight ensemble inside each model
            (`hypermodels.members`, TabM-mini): 1 is a plain MLP; k > 1 trains k
            members that share the hidden layers and serves their mean, for about k
            times a plain step's arithmetic after the first layer.
        residual: Whether each hidden layer after the first adds its input to its output
            where the widths match (a skip connection, as in the ResNet-like MLP of
            Gorishniy et al., 2021), so deeper stacks train like shallow ones;
            ``(False, True)`` searches both.

    The numeric options are declared as hyperparameters only where the space searches
    them (more than one value) and the table has numeric columns. The default searches
    every scaling and embedding: on the real-table benchmark that beat standardising
    alone (`benchmarks/README.md`, *Numeric preprocessing*).
    """

    num_layers: tuple[int, int] = _setting((1, 3), range=(0, 64))
    units: tuple[int, ...] = _setting((64, 128, 256, 512), counts=True)
    per_layer_units: bool = False
    activations: tuple[str, ...] = _setting(("relu", "gelu", "tanh", "swish"), choices=ACTIVATIONS)
    dropout: tuple[float, float] = _setting((0.0, 0.5), range=(0.0, 0.95))
    batch_norm: tuple[bool, ...] = _setting((False, True), flags=True)
    kernel_initializers: tuple[str, ...] = _setting(
        ("glorot_uniform", "he_normal"), choices=INITIALIZERS
    )
    # A penalty's range may start at 0: "off, or log-uniform".
    l1: tuple[float, float] = _setting((0.0, 0.0), range=(0.0, 10.0))
    l2: tuple[float, float] = _setting((0.0, 1e-3), range=(0.0, 10.0))
    optimizers: tuple[str, ...] = _setting(OPTIMIZERS, choices=OPTIMIZERS)
    learning_rate: tuple[float, float] = _setting((1e-4, 1e-2), range=(0.0, 10.0), log=True)
    optimizer_learning_rates: Mapping[str, tuple[float, float]] = dataclasses.field(
        default_factory=dict
    )
    schedules: tuple[str, ...] = _setting(DEFAULT_SCHEDULES, choices=SCHEDULES)
    batch_sizes: tuple[int, ...] = _setting((32, 64, 128), counts=True)
    gradient_clipping: tuple[str, ...] = _setting(("none", "global_norm"), choices=CLIPPING)
    clip_norm: tuple[float, float] = _setting((0.5, 5.0), range=(0.0, 1e6), log=True)
    early_stopping_patience: tuple[int, int] = _setting((5, 5), range=(0, 10_000))
    regression_loss: str = _setting("mse", choice=REGRESSION_LOSSES)
    numeric_scalings: tuple[str, ...] = _setting(
        ("standardize", "quantile", "robust"), choices=NUMERIC_SCALINGS
    )
    numeric_embeddings: tuple[str, ...] = _setting(
        ("none", "periodic", "piecewise_linear"), choices=NUMERIC_EMBEDDINGS
    )
    embedding_dims: tuple[int, ...] = _setting((8, 16, 32), counts=True)
    periodic_frequencies: tuple[int, ...] = _setting((16, 32, 64), counts=True)
    periodic_sigma: tuple[float, float] = _setting((0.01, 10.0), range=(0.0, 1e4), log=True)
    piecewise_bins: tuple[int, ...] = _setting((8, 16, 32), counts=True)
    adam_beta2: tuple[float, ...] = _setting((0.999,), fractions=True)
    label_smoothing: tuple[float, ...] = _setting((0.0,), fractions=True)
    high_cardinality: tuple[str, ...] = _setting(("embedding",), choices=HIGH_CARDINALITY)
    value_embeddings: tuple[bool, ...] = _setting((False,), flags=True, before=(False,))
    row_target_encoding: tuple[bool, ...] = _setting((False, True), flags=True, before=(False,))
    members: tuple[int, ...] = _setting((1,), counts=True, before=(1,))
    residual: tuple[bool, ...] = _setting((False,), flags=True, before=(False,))


#: The default search space; the pipeline's config starts from the same values.
DEFAULT_SPACE = SearchSpace()

#: A known-good configuration, the search's first trial (`MLPHyperModel.starting_values`):
#: two ReLU layers of 256 with light dropout, Adam on a cosine schedule, batch 32, no
#: penalties or clipping, close to the untuned models Keras's guides train. Values a
#: space does not allow fall back to the nearest allowed one (ranges) or the space's
#: default (choices).
STARTING_POINT: Mapping[str, Any] = {
    "num_layers": 2,
    "units": 256,
    "activation": "relu",
    "dropout": 0.1,
    "batch_norm": False,
    "kernel_initializer": "glorot_uniform",
    "use_l1": False,
    "use_l2": False,
    "batch_size": 32,
    "optimizer": "adam",
    "lr_schedule": "cosine",
    "gradient_clipping": "none",
}


def _int_range(hp: keras_tuner.HyperParameters, name: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return hp.Fixed(name, int(low)) if low == high else hp.Int(name, int(low), int(high))


def _float_range(
    hp: keras_tuner.HyperParameters, name: str, bounds: tuple[float, float], *, log: bool = False
) -> float:
    low, high = bounds
    if low == high:
        return hp.Fixed(name, float(low))
    return hp.Float(name, float(low), float(high), sampling="log" if log else "linear")


def _penalty(hp: keras_tuner.HyperParameters, name: str, bounds: tuple[float, float]) -> float:
    """A weight penalty on a log scale that may also be off (0)."""
    low, high = bounds
    if low > 0 or high == 0:
        return _float_range(hp, name, bounds, log=True)
    enabled = hp.Boolean(f"use_{name}")
    with hp.conditional_scope(f"use_{name}", [True]):
        value = hp.Float(name, high / 10**_PENALTY_DECADES, high, sampling="log")
    return float(value) if enabled else 0.0


def _choice(hp: keras_tuner.HyperParameters, name: str, values: Sequence[Any]) -> Any:
    values = list(dict.fromkeys(values))
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    if all(isinstance(v, bool) for v in values):
        return hp.Boolean(name)  # a Choice would store True/False as 1/0
    return hp.Choice(name, values)


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy against smoothed targets: ``1 - smoothing`` on
    the true class plus ``smoothing`` spread evenly over all classes (Keras's
    `SparseCategoricalCrossentropy` has no label smoothing)."""

    def __init__(self, label_smoothing: float, **kwargs: Any) -> None:
        super().__init__(name=kwargs.pop("name", "smoothed_sparse_crossentropy"), **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        target = keras.ops.one_hot(labels, classes) * (1.0 - self.label_smoothing)
        target = target + self.label_smoothing / keras.ops.cast(classes, y_pred.dtype)
        return keras.losses.categorical_crossentropy(target, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _option(hp: keras_tuner.HyperParameters, name: str, values: Sequence[Any]) -> Any:
    """A choice declared only when the space searches it (more than one value)."""
    values = list(dict.fromkeys(values))
    if len(values) == 1:
        return values[0]
    if all(isinstance(v, bool) for v in values):
        return hp.Boolean(name)  # a Choice would store True/False as 1/0
    return hp.Choice(name, values)


def _starting_value(hp: Any) -> Any:
    """One hyperparameter's value at `STARTING_POINT`, kept within what it allows."""
    values = domain(hp)
    preferred = STARTING_POINT.get(hp.name)
    if values.kind == FIXED:
        return hp.value
    if values.kind == FLOAT and hp.name.endswith("learning_rate"):
        return float(math.sqrt(values.low * values.high))
    if hp.name.startswith("units_"):
        preferred = STARTING_POINT["units"]
    if preferred is None:
        return hp.default
    if values.kind == BOOLEAN:
        return bool(preferred)
    if values.kind == CHOICE:
        return preferred if preferred in values.choices else hp.default
    return type(hp.default)(min(max(preferred, values.low), values.high))


@dataclasses.dataclass(frozen=True)
class Target:
    """What the head needs to know of the training labels beyond the task.

    Attributes:
        num_classes: Classes of a multiclass task.
        mean: Regression only: the output is rescaled to this mean, so the network
            learns a standardised target.
        std: Regression only: the output's scale (0 is taken as 1).
    """

    num_classes: int = 0
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, y: np.ndarray, *, task: str, num_classes: int | None = None) -> Target:
        """The target of training labels `y`: class ids 0..k-1, where `num_classes`
        (the data's, when a class may be missing from these rows) defaults to k."""
        y = np.asarray(y)
        if task == "regression":
            return cls(mean=float(y.mean()), std=float(y.std()))
        return cls(num_classes=int(y.max()) + 1 if num_classes is None else num_classes)


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a trial's training runs, whatever the model: none of it changes what the
    search finds, only how fast and on which devices.

    Attributes:
        steps_per_execution: Training steps per call into the compiled function; 0
            picks ``min(32, steps per epoch)``, which removes most per-step Python
            overhead on CPU. Under a multi-replica strategy it is always 1, since
            Keras's multi-step loop fails there in TF 2.21.
        jit_compile: Compile with XLA. Off by default: on CPU it made short trials
            slower; worth trying on GPU.
        fused_optimizers: Optimizers update with TensorFlow's fused kernels (Adam, AdamW,
            SGD, RMSprop) or plain TensorFlow ops (Adagrad, Nadam), which trace and
            step faster (`hypermodels.fused_optimizers`); off, Keras's own classes.
        input_pipeline: ``tf_data`` (tensors converted once, index-shuffled batches,
            see `hypermodels.inputs`) or ``numpy`` (plain `fit` on arrays).
        per_replica_batch: The searched ``batch_size`` is per replica: one step takes
            ``batch_size x replicas`` rows. Schedules count steps of that global batch.
    """

    steps_per_execution: int = 0
    jit_compile: bool = False
    fused_optimizers: bool = True
    input_pipeline: str = "tf_data"
    per_replica_batch: bool = False

    def __post_init__(self) -> None:
        if self.input_pipeline not in INPUT_PIPELINES:
            raise ValueError(
                f"Argument `input_pipeline` must be one of {INPUT_PIPELINES}. "
                f"Received: input_pipeline={self.input_pipeline!r}"
            )


class MLPHyperModel(keras_tuner.HyperModel):
    """A Dense stack whose depth, widths, activation, dropout, batch normalisation,
    initializer, weight penalties, optimizer (and its own settings), learning rate,
    schedule, gradient clipping, batch size and early-stopping patience are
    hyperparameters.

    Works with any KerasTuner tuner:

    ```python
    hypermodel = MLPHyperModel.from_arrays(x_train, y_train, task="multiclass")
    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy", max_trials=5)
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=5)
    ```

    Hyperband promotions continue where their parent stopped: the optimizer's step
    counter is set to ``initial_epoch x steps per epoch`` before training, so the
    learning-rate schedule resumes at the parent's position instead of restarting.

    Args:
        schema: The feature columns and their training statistics.
        task: ``binary``, ``multiclass`` or ``regression``.
        target: The classes of a multiclass task, a regression target's mean and scale.
        train_size: Training rows, to turn epochs into schedule steps.
        max_epochs: Epochs of the longest trial; schedules run over them.
        space: The search space.
        objective: Metric early stopping watches (``val_loss`` unless told).
        execution: How trials train: steps per execution, XLA, fused optimizers, the
            input pipeline, and whether the batch size is per replica.
        folds: Networks per model for a cross-validated trial: with k > 1 the model
            holds k networks that share no weight (`MemberAverage`), which `fit`'s
            ``sample_weight`` of shape ``(rows, k)`` trains each on its own rows and
            whose validation data's one-hot ``(rows, k)`` weights score out of fold.
            Needs ``members = 1``.
        **kwargs: `keras_tuner.HyperModel`'s ``name`` and ``tunable``.
    """

    def __init__(
        self,
        *,
        schema: TabularSchema,
        task: str,
        target: Target = Target(),
        train_size: int = 1000,
        max_epochs: int = 20,
        space: SearchSpace = DEFAULT_SPACE,
        objective: keras_tuner.Objective | None = None,
        execution: Execution = Execution(),
        folds: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if folds < 1 or (folds > 1 and tuple(space.members) != (1,)):
            raise ValueError(
                "Argument `folds` must be >= 1, and 1 unless `space.members` is (1,). "
                f"Received: folds={folds}, members={space.members}"
            )
        if task not in TASKS:
            raise ValueError(f"Argument `task` must be one of {TASKS}. Received: task={task!r}")
        if task == "multiclass" and target.num_classes < 2:
            raise ValueError(
                f"Argument `num_classes` must be >= 2 for a multiclass task. "
                f"Received: num_classes={target.num_classes}"
            )
        self.schema = schema
        self.task = task
        self.target = target
        self.train_size = int(train_size)
        self.max_epochs = int(max_epochs)
        self.space = space
        self.objective = objective or keras_tuner.Objective("val_loss", "min")
        self.execution = execution
        self.folds = int(folds)
        self._inputs = InputCache()

    @classmethod
    def from_arrays(
        cls,
        x_train: np.ndarray,
        y_train: np.ndarray,
        *,
        task: str,
        max_epochs: int = 20,
        **space: Any,
    ) -> MLPHyperModel:
        """Builds a hypermodel for a float feature matrix; `space` overrides fields of
        `DEFAULT_SPACE` (``units=(8, 16)``, ...)."""
        return cls(
            schema=TabularSchema.numeric_matrix(x_train),
            task=task,
            target=Target.of(y_train, task=task),
            train_size=len(y_train),
            max_epochs=max_epochs,
            space=dataclasses.replace(DEFAULT_SPACE, **space),
        )

    def starting_values(self, hyperparameters: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Values of `STARTING_POINT` for the active hyperparameters of a declared space.

        The tuners run these as the search's first trial (``tuner.first_trial =
        "recommended"``), as SMAC starts from the default configuration: a random
        search of this size can miss every good region, and a known-good trial gives it
        a strong candidate from the start (`benchmarks/search_quality.py` measures the
        effect as ``pipeline`` against ``pipeline_random_first``). Learning rates take the
        middle (on a log scale) of their range, which the range test has measured for each
        optimizer. Hyperparameters the point does not name keep their declared default.
        """
        chosen = keras_tuner.HyperParameters()
        for hp in hyperparameters.space:
            chosen.merge([hp])
            if chosen.is_active(hp):
                chosen.values[hp.name] = _starting_value(hp)
        return {name: value for name, value in chosen.values.items() if chosen.is_active(name)}

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch at this batch size."""
        return max(1, math.ceil(self.train_size / batch_size))

    def global_batch_size(self, batch_size: int, replicas: int) -> int:
        """Rows per optimizer step under a strategy with `replicas` replicas."""
        return batch_size * replicas if self.execution.per_replica_batch else batch_size

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        choices = self.declare(hp)
        if self.folds > 1:  # networks that share nothing, so each fold's score is honest
            networks = [
                keras.Model(*self._network(choices), name=f"fold_{i}") for i in range(self.folds)
            ]
            inputs = build_inputs(self.schema)
            outputs = keras.ops.stack([network(inputs) for network in networks], axis=1)
            model: keras.Model = MemberAverage(inputs, outputs, name="mlp")
        elif choices["members"] > 1:
            model = MemberAverage(*self._network(choices), name="mlp")
        else:
            model = keras.Model(*self._network(choices), name="mlp")
        steps = self.execution.steps_per_execution or min(
            _MAX_STEPS_PER_EXECUTION, self.steps_per_epoch(choices["batch_size"])
        )
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # Keras's multi-step loop fails under MirroredStrategy in TF 2.21 ("You must
            # feed a value for placeholder tensor ... while/cond/Placeholder").
            steps = 1
        model.compile(
            optimizer=choices["optimizer"],
            steps_per_execution=steps,
            jit_compile=self.execution.jit_compile,
            **self._loss_and_metrics(choices["label_smoothing"]),
        )
        return model

    def _network(self, choices: Mapping[str, Any]) -> tuple[Any, Any]:
        """One network's inputs and outputs: preprocessing, hidden layers, head."""
        inputs, x = build_preprocessing(
            self.schema,
            scaling=choices["numeric_scaling"],
            embedding=self._numeric_embedding(choices),
            high_cardinality=choices["high_cardinality"],
            value_embedding=choices["value_embedding"],
            row_codes=choices["row_target_encoding"],
        )
        members = choices["members"]
        if members > 1:
            x = member_adapter(members, x.shape[-1])(x)
        l1, l2 = choices["l1"], choices["l2"]
        regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
        for index, width in enumerate(choices["widths"]):
            block_input = x
            x = keras.layers.Dense(
                width,
                use_bias=not choices["batch_norm"],
                kernel_initializer=choices["initializer"],
                kernel_regularizer=regularizer,
                name=f"dense_{index}",
            )(x)
            if choices["batch_norm"]:
                x = keras.layers.BatchNormalization(name=f"batch_norm_{index}")(x)
            x = keras.layers.Activation(choices["activation"], name=f"activation_{index}")(x)
            if choices["dropout"] > 0:
                x = keras.layers.Dropout(choices["dropout"], name=f"dropout_{index}")(x)
            if choices["residual"] and index > 0 and block_input.shape[-1] == width:
                x = keras.layers.Add(name=f"residual_{index}")([block_input, x])
        return inputs, self._head(x, members)

    def declare(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Declares the trial's hyperparameters in `hp`, in `build`'s order, and returns
        the values `build` needs (the optimizer built), without building a layer.

        KerasTuner finds a space's conditional hyperparameters by building the model
        once per condition (`KerasTunerFixes` in `kt_pipeline._compat` calls this
        instead): a model with its preprocessing costs tens of milliseconds to build.
        """
        choices = self._declare_network(hp)
        choices["optimizer"] = self._declare_optimizer(hp, batch_size=choices["batch_size"])
        _int_range(hp, "early_stopping_patience", self.space.early_stopping_patience)
        choices.update(self._declare_numeric(hp))
        choices.update(self._declare_other_columns(hp))
        choices["members"] = _option(hp, "members", self.space.members)
        choices["label_smoothing"] = (
            _option(hp, "label_smoothing", self.space.label_smoothing)
            if self.task != "regression"
            else 0.0
        )
        choices["residual"] = _option(hp, "residual", self.space.residual)
        return choices

    def _declare_network(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The hidden layers, their regularisation, and the batch size."""
        space = self.space
        num_layers = _int_range(hp, "num_layers", space.num_layers)
        return {
            "widths": self._units(hp, num_layers),
            "activation": _choice(hp, "activation", space.activations),
            "dropout": _float_range(hp, "dropout", space.dropout),
            "batch_norm": _choice(hp, "batch_norm", space.batch_norm),
            "initializer": _choice(hp, "kernel_initializer", space.kernel_initializers),
            "l1": _penalty(hp, "l1", space.l1),
            "l2": _penalty(hp, "l2", space.l2),
            "batch_size": _choice(hp, "batch_size", space.batch_sizes),
        }

    def _declare_optimizer(
        self, hp: keras_tuner.HyperParameters, *, batch_size: int
    ) -> keras.optimizers.Optimizer:
        """The optimizer with its learning rate, schedule and clipping."""
        space = self.space
        learning_rate = choose_learning_rate(
            hp,
            bounds=space.learning_rate,
            choices=space.optimizers,
            by_optimizer=space.optimizer_learning_rates,
        )
        # The tuner builds inside the strategy's scope, so this is the trial's strategy.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        steps = self.steps_per_epoch(self.global_batch_size(batch_size, replicas))
        schedule = build_schedule(
            hp,
            learning_rate=learning_rate,
            # Every trial follows the schedule of a full-length one: a short Hyperband
            # round stops partway down it.
            decay_steps=steps * self.max_epochs,
            choices=space.schedules,
        )
        return build_optimizer(
            hp,
            learning_rate=schedule,
            choices=space.optimizers,
            clipping=space.gradient_clipping,
            clip_norm=space.clip_norm,
            fused=self.execution.fused_optimizers,
            adam_beta2=space.adam_beta2,
        )

    def _declare_other_columns(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """How high-cardinality columns, repeated numeric values and repeated rows
        enter, each declared only where the table has such columns."""
        space, schema = self.space, self.schema
        return {
            "high_cardinality": (
                _option(hp, "high_cardinality", space.high_cardinality)
                if high_cardinality_columns(schema)
                else "embedding"
            ),
            "value_embedding": (
                _option(hp, "value_embedding", space.value_embeddings)
                if value_columns(schema)
                else False
            ),
            "row_target_encoding": (
                _option(hp, "row_target_encoding", space.row_target_encoding)
                if schema.rows is not None
                else False
            ),
        }

    def _declare_numeric(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The numeric embedding, the scaling and the embedding's sizes (conditional on
        the embedding where the space searches several)."""
        space = self.space
        if not self.schema.numeric:  # nothing to scale or embed: nothing to search
            return {"numeric_embedding": "none", "numeric_scaling": space.numeric_scalings[0]}
        embeddings = list(dict.fromkeys(space.numeric_embeddings))
        choices = {"numeric_embedding": _option(hp, "numeric_embedding", embeddings)}

        def scope(names: list[str]) -> Any:
            if len(embeddings) == 1:
                return contextlib.nullcontext()
            return hp.conditional_scope("numeric_embedding", names)

        # A piecewise-linear embedding bins the raw values: no scaling applies to it.
        scaled = [e for e in embeddings if e != "piecewise_linear"]
        choices["numeric_scaling"] = space.numeric_scalings[0]
        if scaled:
            with scope(scaled):
                choices["numeric_scaling"] = _option(hp, "numeric_scaling", space.numeric_scalings)

        embedded = [e for e in embeddings if e != "none"]
        if embedded:
            with scope(embedded):
                choices["embedding_dim"] = _option(hp, "embedding_dim", space.embedding_dims)
        if "periodic" in embedded:
            with scope(["periodic"]):
                choices["periodic_frequencies"] = _option(
                    hp, "periodic_frequencies", space.periodic_frequencies
                )
                low, high = space.periodic_sigma
                choices["periodic_sigma"] = (
                    low if low == high else hp.Float("periodic_sigma", low, high, sampling="log")
                )
        if "piecewise_linear" in embedded:
            with scope(["piecewise_linear"]):
                choices["piecewise_bins"] = _option(hp, "piecewise_bins", space.piecewise_bins)
        return choices

    def _numeric_embedding(self, choices: Mapping[str, Any]) -> Any:
        """The embedding layer the choices name, or None."""
        if not self.schema.numeric or choices["numeric_embedding"] == "none":
            return None
        if choices["numeric_embedding"] == "periodic":
            return PeriodicEmbedding(
                choices["periodic_frequencies"],
                choices["embedding_dim"],
                choices["periodic_sigma"],
                name="periodic_embedding",
            )
        edges = bin_edges([c.quantiles for c in self.schema.numeric], choices["piecewise_bins"])
        return PiecewiseLinearEmbedding(
            edges, choices["embedding_dim"], name="piecewise_linear_embedding"
        )

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> Any:
        """Trains with the trial's batch size, early stopping and schedule callbacks.

        A Hyperband promotion (``initial_epoch > 0``) continues its parent's schedule.
        """
        batch_size = self.global_batch_size(
            hp.get("batch_size"), model.distribute_strategy.num_replicas_in_sync
        )
        callbacks = list(kwargs.pop("callbacks", None) or [])
        patience = hp.get("early_stopping_patience")
        if patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=self.objective.name,
                    mode=self.objective.direction,
                    patience=patience,
                )
            )
        callbacks.extend(schedule_callbacks(hp))
        initial_epoch = int(kwargs.get("initial_epoch") or 0)
        if initial_epoch:
            self._continue_schedule(model, initial_epoch * self.steps_per_epoch(batch_size))
        if self.execution.input_pipeline == "numpy" or len(args) != 2:
            return model.fit(*args, batch_size=batch_size, callbacks=callbacks, **kwargs)
        x, y = args
        shuffle = bool(kwargs.pop("shuffle", True))
        train = self._inputs.training(
            x,
            y,
            batch_size=batch_size,
            shuffle=shuffle,
            sample_weight=kwargs.pop("sample_weight", None),
        )
        validation = kwargs.pop("validation_data", None)
        if isinstance(validation, tuple) and len(validation) in (2, 3):
            validation = self._inputs.evaluation(
                *validation[:2],
                batch_size=max(batch_size, EVALUATION_BATCH_SIZE),
                sample_weight=validation[2] if len(validation) == 3 else None,
            )
        prepare_step_functions(model, element_spec=train.element_spec)
        kwargs["shuffle"] = False  # the dataset shuffles (or not) itself
        return model.fit(train, validation_data=validation, callbacks=callbacks, **kwargs)

    @staticmethod
    def _continue_schedule(model: keras.Model, step: int) -> None:
        optimizer = model.optimizer
        if not optimizer.built:
            with model.distribute_strategy.scope():
                optimizer.build(model.trainable_variables)
        optimizer.iterations.assign(step)

    def _units(self, hp: keras_tuner.HyperParameters, num_layers: int) -> list[int]:
        space = self.space
        if not space.per_layer_units:
            return [_choice(hp, "units", space.units)] * num_layers
        low, high = space.num_layers
        widths = []
        for index in range(high):
            if index < low:  # always present
                widths.append(_choice(hp, f"units_{index}", space.units))
                continue
            # Declared whatever the depth, active only when the layer exists.
            with hp.conditional_scope("num_layers", list(range(index + 1, high + 1))):
                width = _choice(hp, f"units_{index}", space.units)
            if index < num_layers:
                widths.append(width)
        return widths

    def _head(self, x: Any, members: int = 1) -> Any:
        # The head stays float32 so a mixed-precision body still gives stable losses.
        outputs = self.target.num_classes if self.task == "multiclass" else 1
        if members > 1:
            x = member_heads(members, outputs, name="member_heads")(x)
            if self.task == "regression":
                return self._rescale(x)
            activation = "sigmoid" if self.task == "binary" else "softmax"
            return keras.layers.Activation(activation, dtype="float32", name="output")(x)
        if self.task == "binary":
            return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="output")(x)
        if self.task == "multiclass":
            return keras.layers.Dense(
                self.target.num_classes, activation="softmax", dtype="float32", name="output"
            )(x)
        return self._rescale(keras.layers.Dense(1, dtype="float32", name="output_standardised")(x))

    def _rescale(self, x: Any) -> Any:
        """Standardised predictions back to the label's units."""
        return keras.layers.Rescaling(
            scale=self.target.std or 1.0, offset=self.target.mean, dtype="float32", name="output"
        )(x)

    def _loss_and_metrics(self, label_smoothing: float = 0.0) -> dict[str, Any]:
        if self.task == "binary":
            return {
                "loss": keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
                if label_smoothing
                else "binary_crossentropy",
                "metrics": [
                    keras.metrics.BinaryAccuracy(name="accuracy"),
                    keras.metrics.AUC(name="auc"),
                ],
            }
        if self.task == "multiclass":
            loss = (
                SmoothedSparseCrossentropy(label_smoothing)
                if label_smoothing
                else "sparse_categorical_crossentropy"
            )
            return {"loss": loss, "metrics": ["accuracy"]}
        return {
            "loss": self.space.regression_loss,
            "metrics": [
                keras.metrics.MeanAbsoluteError(name="mae"),
                keras.metrics.RootMeanSquaredError(name="rmse"),
            ],
        }
