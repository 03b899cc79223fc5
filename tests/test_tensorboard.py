"""The TensorBoard logs, checked by the real TensorBoard server over its HTTP API, and
the pieces of `kt_pipeline.tensorboard` on their own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras_tuner
import pytest
import tensorflow as tf
from conftest import FLAKY_TRIALS

from hypermodels import OPTIMIZERS
from kt_pipeline.tensorboard import hparams_from_space, metrics_from_names

_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
_READY_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _session_groups(base: str) -> dict[str, Any]:
    request = {
        "experimentName": "",
        "allowedStatuses": _STATUSES,
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
    }
    groups: dict[str, Any] = _post(f"{base}/data/plugin/hparams/session_groups", request)
    return groups


def _tensorboard_binary() -> str:
    return str(Path(sys.executable).with_name("tensorboard"))


@pytest.fixture(scope="module")
def server(flaky_experiment: Path) -> Iterator[str]:
    """The real `tensorboard` on 127.0.0.1 over the finished experiment, ready to answer:
    its background loader has read every trial."""
    port = _free_port()
    process = subprocess.Popen(
        [
            _tensorboard_binary(),
            "--logdir",
            str(flaky_experiment / "tensorboard"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _READY_SECONDS
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"tensorboard exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if _session_groups(base).get("totalSize") == FLAKY_TRIALS:
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"tensorboard did not serve {FLAKY_TRIALS} trials in {_READY_SECONDS} s"
                )
            # Polling interval while the server starts; readiness is the condition above.
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def _space(experiment: Path) -> dict[str, Any]:
    oracle = json.loads((experiment / "search" / "oracle.json").read_text())
    hps = keras_tuner.HyperParameters.from_config(oracle["hyperparameters"])
    return {hp.name: hp for hp in hps.space}


@pytest.mark.slow
def test_hparams_experiment_declares_every_domain_from_the_search_space(
    server: str, flaky_experiment: Path
) -> None:
    experiment = _post(
        f"{server}/data/plugin/hparams/experiment",
        {"experimentName": "", "includeMetrics": True},
    )
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    space = _space(flaky_experiment)
    assert set(infos) == set(space)
    hp_types = keras_tuner.engine.hyperparameters
    for name, hp in space.items():
        info = infos[name]
        if isinstance(hp, hp_types.Boolean):
            assert sorted(info["domainDiscrete"]) == [False, True], name
        elif isinstance(hp, hp_types.Fixed):
            assert info["domainDiscrete"] == [hp.value], name
        elif isinstance(hp, hp_types.Choice):
            assert sorted(info["domainDiscrete"]) == sorted(hp.values), name
        else:  # Int and Float ranges are intervals with the space's bounds
            assert info["domainInterval"]["minValue"] == pytest.approx(hp.min_value), name
            assert info["domainInterval"]["maxValue"] == pytest.approx(hp.max_value), name
    # Conditional values that no trial may have used are declared too.
    assert {"sgd_momentum", "adamw_weight_decay", "warmup_fraction", "clip_norm"} <= set(infos)
    assert infos["units"]["domainDiscrete"] == [8, 16]
    # Every optimizer has a learning-rate range of its own, declared under its condition.
    assert {f"{name}_learning_rate" for name in OPTIMIZERS} <= set(infos)
    metrics = {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert {
        ("validation", "epoch_accuracy"),
        ("validation", "epoch_loss"),
        ("train", "epoch_accuracy"),
        ("train", "epoch_loss"),
    } <= metrics


@pytest.mark.slow
def test_session_groups_list_every_trial_with_its_status_and_metrics(
    server: str, flaky_experiment: Path
) -> None:
    groups = _session_groups(server)
    assert groups["totalSize"] == FLAKY_TRIALS
    trials = {
        path.parent.name.removeprefix("trial_"): json.loads(path.read_text())
        for path in (flaky_experiment / "search").glob("trial_*/trial.json")
    }
    served = {group["name"]: group for group in groups["sessionGroups"]}
    assert set(served) == set(trials)
    for trial_id, trial in trials.items():
        (session,) = served[trial_id]["sessions"]
        if trial["status"] == "COMPLETED":
            assert session["status"] == "STATUS_SUCCESS"
            values = {
                (m["name"]["group"], m["name"]["tag"]): m["value"]
                for m in served[trial_id]["metricValues"]
            }
            assert 0 <= values[("validation", "epoch_accuracy")] <= 1
            query = urllib.parse.urlencode(
                {"run": f"{trial_id}/execution0/validation", "tag": "epoch_accuracy"}
            )
            points = _get(f"{server}/data/plugin/scalars/scalars?{query}")
            curve = {step: value for _, step, value in points}
            assert curve[trial["best_step"]] == pytest.approx(trial["score"])
        else:
            assert trial["status"] == "FAILED"
            assert session["status"] == "STATUS_FAILURE"
        active = {k for k in trial["hyperparameters"]["values"] if not k.startswith("tuner/")}
        assert active <= set(served[trial_id]["hparams"])
    statuses = sorted(t["status"] for t in trials.values())
    assert statuses == ["COMPLETED"] * (FLAKY_TRIALS - 1) + ["FAILED"]


@pytest.mark.slow
def test_scalars_per_trial_and_for_the_search(server: str, flaky_experiment: Path) -> None:
    tags = _get(f"{server}/data/plugin/scalars/tags")
    completed = [
        path.parent.name.removeprefix("trial_")
        for path in (flaky_experiment / "search").glob("trial_*/trial.json")
        if json.loads(path.read_text())["status"] == "COMPLETED"
    ]
    for trial_id in completed:
        train = set(tags[f"{trial_id}/execution0/train"])
        assert {
            "epoch_loss",
            "epoch_accuracy",
            "epoch_learning_rate",
            "epoch_seconds",
            "epoch_samples_per_second",
        } <= train
        assert {"epoch_loss", "epoch_accuracy"} <= set(tags[f"{trial_id}/execution0/validation"])
        query = urllib.parse.urlencode(
            {"run": f"{trial_id}/execution0/train", "tag": "epoch_samples_per_second"}
        )
        points = _get(f"{server}/data/plugin/scalars/scalars?{query}")
        assert [step for _, step, _ in points] == [0, 1]
        assert all(value > 0 for _, _, value in points)
    assert {"best_objective_by_trial", "best_objective_by_second", "trial_objective"} <= set(
        tags["search"]
    )
    query = urllib.parse.urlencode({"run": "search", "tag": "best_objective_by_trial"})
    best = _get(f"{server}/data/plugin/scalars/scalars?{query}")
    assert [step for _, step, _ in best] == list(range(1, FLAKY_TRIALS + 1))
    values = [value for _, _, value in best]
    assert values == sorted(values)  # val_accuracy is maximised: best so far never drops


def test_domains_and_metrics_from_plain_hyperparameters() -> None:
    hp = keras_tuner.HyperParameters()
    hp.Int("layers", 1, 3)
    hp.Int("width", 8, 32, step=8)
    hp.Float("rate", 1e-4, 1e-2, sampling="log")
    hp.Choice("activation", ["relu", "tanh"])
    hp.Boolean("norm")
    hp.Fixed("batch", 32)
    hparams = {h.name: h.domain for h in hparams_from_space(hp.space, hyperband=True)}
    assert (hparams["layers"].min_value, hparams["layers"].max_value) == (1, 3)
    assert hparams["width"].values == [8, 16, 24, 32]
    assert (hparams["rate"].min_value, hparams["rate"].max_value) == (1e-4, 1e-2)
    assert hparams["activation"].values == ["relu", "tanh"]
    assert hparams["norm"].values == [False, True]
    assert hparams["batch"].values == [32]
    assert hparams["tuner/trial_id"] is None
    metrics = {
        m.as_proto().display_name: m.as_proto().name
        for m in metrics_from_names(["loss", "val_auc"])
    }
    assert (metrics["val_auc"].group, metrics["val_auc"].tag) == ("validation", "epoch_auc")
    assert (metrics["loss"].group, metrics["loss"].tag) == ("train", "epoch_loss")


def _events(log_dir: Path) -> list[Any]:
    events = []
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        events.extend(tf.compat.v1.train.summary_iterator(str(path)))
    return events


@pytest.mark.slow
def test_hyperband_promotions_log_their_parent_and_continue_its_epochs(tmp_path: Path) -> None:
    import keras
    import numpy as np

    from hypermodels import MLPHyperModel
    from kt_pipeline.tuners import TunerSettings, TunerSpec, build_tuner

    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    hypermodel = MLPHyperModel.from_arrays(
        x, y, task="binary", units=(4, 8), num_layers=(1, 1), batch_sizes=(16,)
    )
    tuner = build_tuner(
        hypermodel,
        TunerSpec(
            objective=keras_tuner.Objective("val_accuracy", "max"),
            directory=str(tmp_path),
            settings=TunerSettings(algorithm="hyperband", max_epochs=3, factor=3, max_trials=4),
        ),
    )
    root = tmp_path / "tensorboard"
    tuner.search(
        x,
        y,
        validation_data=(x, y),
        epochs=3,
        callbacks=[keras.callbacks.TensorBoard(log_dir=str(root))],
        verbose=0,
    )
    promoted = [
        t for t in tuner.oracle.trials.values() if t.hyperparameters.values.get("tuner/trial_id")
    ]
    assert len(promoted) == 1, "Hyperband's first bracket promotes its best trial"
    for trial in promoted:
        values = trial.hyperparameters.values
        run = root / trial.trial_id / "execution0"
        texts = [
            tf.make_ndarray(v.tensor).item().decode()
            for e in _events(run)
            for v in e.summary.value
            if v.tag == "parent_trial_id"
        ]
        assert texts == [values["tuner/trial_id"]]
        steps = sorted(
            {
                e.step
                for e in _events(run / "train")
                for v in e.summary.value
                if v.tag == "epoch_loss"
            }
        )
        assert steps[0] == values["tuner/initial_epoch"] > 0
        session_hparams = [
            v.metadata.plugin_data.content
            for e in _events(run)
            for v in e.summary.value
            if v.tag == "_hparams_/session_start_info"
        ]
        assert session_hparams and values["tuner/trial_id"].encode() in session_hparams[0]


@pytest.mark.slow
def test_a_resumed_search_keeps_its_one_experiment_summary(
    flaky_experiment: Path, tmp_path: Path
) -> None:
    import shutil

    from kt_pipeline.config import load_config
    from kt_pipeline.pipeline import run_search

    experiment = tmp_path / "experiment"
    shutil.copytree(flaky_experiment, experiment)
    summaries = sorted((experiment / "tensorboard" / "search").glob("*.hparams_config"))
    assert len(summaries) == 1
    config = load_config(
        experiment / "config.toml",
        [
            f"runtime.experiment_dir={str(experiment)!r}",
            f"tuner.max_trials={FLAKY_TRIALS + 1}",
        ],
    )
    summary = run_search(config)
    assert summary.trials == FLAKY_TRIALS + 1
    assert sorted((experiment / "tensorboard" / "search").glob("*.hparams_config")) == summaries
    tags = [v.tag for e in _events(experiment / "tensorboard" / "search") for v in e.summary.value]
    assert tags.count("_hparams_/experiment") == 1
    assert tags.count("best_objective_by_trial") == FLAKY_TRIALS + 1
