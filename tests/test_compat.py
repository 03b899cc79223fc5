"""The hooks into KerasTuner's, Keras's and TensorFlow's internals (`kt_pipeline._compat`):
each fix does what it says, and the versions they were written for are checked."""

from __future__ import annotations

import ast
import contextlib
import errno
import importlib
import inspect
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import keras_tuner
import pytest

from kt_pipeline import _compat
from kt_pipeline.errors import UserInputError


def test_the_installed_versions_are_the_ones_the_hooks_were_written_for() -> None:
    _compat.check_versions()


def test_another_keras_tuner_is_refused_in_one_line() -> None:
    with pytest.raises(
        UserInputError, match=r"written for keras-tuner 1\.4\.8\*; found keras-tuner 1\.5\.0"
    ):
        _compat.check_versions({"keras-tuner": "1.5.0"})


def test_conditions_cross_the_wire_without_printing(capsys: pytest.CaptureFixture[str]) -> None:
    """KerasTuner 1.4.8's `Parent.to_proto` prints the condition's first value each time
    a space or trial is sent to a worker."""
    _compat.apply()
    hp = keras_tuner.HyperParameters()
    hp.Choice("optimizer", ["sgd", "adam"])
    with hp.conditional_scope("optimizer", ["sgd"]):
        hp.Float("momentum", 0.0, 0.9)
    with hp.conditional_scope("optimizer", ["adam"]):
        hp.Boolean("amsgrad")
    restored = keras_tuner.HyperParameters.from_proto(hp.to_proto())
    assert capsys.readouterr().out == ""
    configs = {h.name: h.get_config() for h in hp.space}
    assert {h.name: h.get_config() for h in restored.space} == configs


def test_hyperband_brackets_follow_keras_tuners_schedule() -> None:
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective="val_loss", max_epochs=20, factor=3, hyperband_iterations=1
    )
    brackets = _compat.hyperband_brackets(oracle)
    assert [bracket for bracket, _ in brackets] == [2, 1, 0]  # the order KerasTuner runs
    assert sum(size for _, rounds in brackets for size, _, _ in rounds) == 30
    for _, rounds in brackets:
        assert rounds[-1][1] == 20  # every bracket ends at max_epochs
        assert sum(trained for _, _, trained in rounds) == rounds[-1][1]


def test_the_first_draw_can_be_answered_and_later_draws_sample() -> None:
    hp = keras_tuner.HyperParameters()
    hp.Int("units", 1, 1000)
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective="val_loss", max_trials=5, hyperparameters=hp, seed=1
    )
    _compat.answer_first_draw(oracle, lambda: {"units": 7})
    assert oracle._random_values() == {"units": 7}
    assert oracle._random_values() != {"units": 7}


def test_keras_tuner_state_files_are_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KerasTuner 1.4.8 truncates its oracle and trial files before writing them, so a
    full disk leaves half a file that no resume can read."""
    from keras_tuner.src import utils

    _compat.apply()
    path = tmp_path / "oracle.json"
    utils.save_json(str(path), {"state": 1})

    def full_disk(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_compat.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        utils.save_json(str(path), {"state": 2})
    assert json.loads(path.read_text()) == {"state": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.json"]  # no partial left


class _RefusingStub:
    """A worker's stub to a chief that refuses every report with `code`."""

    def __init__(self, code: object) -> None:
        self.code = code

    def _refuse(self, *_: object, **__: object) -> None:
        import grpc

        class Refused(grpc.RpcError):
            def code(inner) -> object:
                return self.code

            def details(inner) -> str:
                return "trial 3 is leased to 'worker1', not to 'worker0'"

        raise Refused()

    UpdateTrial = EndTrial = _refuse


def test_a_worker_drops_the_result_of_a_trial_the_chief_took_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """KerasTuner's worker crashes on any refused report; ours drops the result when the
    chief says the trial is not the worker's any more, and still raises on every other
    error."""
    import grpc
    from keras_tuner.src.distribute import oracle_client
    from keras_tuner.src.engine import trial as trial_module

    _compat.apply()
    hp = keras_tuner.HyperParameters()
    hp.Float("rate", 1e-3, 1e-1)
    client = oracle_client.OracleClient.__new__(oracle_client.OracleClient)  # no chief to dial
    client.tuner_id, client.should_report, client.multi_worker = "worker0", True, False
    client.get_space = lambda: hp
    client.stub = _RefusingStub(grpc.StatusCode.PERMISSION_DENIED)
    trial = trial_module.Trial(hp, trial_id="3", status="COMPLETED")
    assert client.update_trial("3", {"score": 1.0}).status == "STOPPED"
    client.end_trial(trial)
    assert "trial 3: the chief refused this worker's result" in caplog.text
    client.stub = _RefusingStub(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError):
        client.update_trial("3", {"score": 1.0})
    with pytest.raises(grpc.RpcError):
        client.end_trial(trial)


class _AnsweringStub:
    """A chief that answers every trial request with a trial of this status."""

    def __init__(self, status: str) -> None:
        from keras_tuner.src import protos
        from keras_tuner.src.engine import trial as trial_module

        trial = trial_module.Trial(keras_tuner.HyperParameters(), trial_id="1", status=status)
        self._response = protos.get_service().CreateTrialResponse(trial=trial.to_proto())

    def CreateTrial(self, request: Any, **_: Any) -> Any:
        return self._response


def test_a_worker_told_to_wait_waits_before_it_asks_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KerasTuner's worker asks again at once when told to wait (IDLE), and so spins on
    the chief; ours waits `IDLE_WAIT_SECONDS` first (the chief no longer holds the
    request, `tests/test_parallel.py`), and only then."""
    from keras_tuner.src.distribute import oracle_client

    _compat.apply()
    waits: list[float] = []
    monkeypatch.setattr(_compat, "_idle_wait", waits.append)
    client = oracle_client.OracleClient.__new__(oracle_client.OracleClient)  # no chief to dial
    client.stub = _AnsweringStub("IDLE")
    assert client.create_trial("worker0").status == "IDLE"
    assert waits == [_compat.IDLE_WAIT_SECONDS]
    client.stub = _AnsweringStub("RUNNING")
    assert client.create_trial("worker0").status == "RUNNING"
    assert waits == [_compat.IDLE_WAIT_SECONDS]


class _CountingTrials(dict):  # type: ignore[type-arg]
    """The oracle's trials, counting lookups."""

    lookups = 0

    def __getitem__(self, key: Any) -> Any:
        self.lookups += 1
        return super().__getitem__(key)


def test_too_many_failures_in_a_row_are_found_from_the_end_of_the_order() -> None:
    """KerasTuner walks every ended trial after each end; ours reads the failures at
    the end of the order alone, and raises where KerasTuner's would."""
    from keras_tuner.src.engine import trial as trial_module

    _compat.apply()
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective="val_loss", max_trials=1, max_consecutive_failed_trials=2
    )
    trials = _CountingTrials()
    statuses = ["COMPLETED"] * 500 + ["FAILED", "COMPLETED", "FAILED"]
    for number, status in enumerate(statuses):
        trials[str(number)] = trial_module.Trial(
            oracle.hyperparameters, trial_id=str(number), status=status, message=f"error {number}"
        )
    oracle.trials, oracle.end_order = trials, list(trials)
    oracle._check_consecutive_failures()  # one failure at the end: under the limit
    assert trials.lookups == 2
    trials["503"] = trial_module.Trial(
        oracle.hyperparameters, trial_id="503", status="FAILED", message="error 503"
    )
    oracle.end_order.append("503")
    with pytest.raises(RuntimeError, match=r"exceeded the limit of 2\.\nerror 503"):
        oracle._check_consecutive_failures()
    oracle.max_consecutive_failed_trials = None  # as a search without a limit sets it
    oracle._check_consecutive_failures()


def test_the_oracle_lock_is_released_when_the_block_raises() -> None:
    """KerasTuner's `synchronized` keeps the oracle's lock after an exception, and every
    later oracle call then waits forever; `oracle_lock` releases it."""
    import threading

    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    # Held twice by one thread (re-entrant), then a refused call raises inside.
    with pytest.raises(ValueError), _compat.oracle_lock(oracle), _compat.oracle_lock(oracle):
        raise ValueError("a refused call")
    taken = threading.Event()

    def other_thread() -> None:
        with _compat.oracle_lock(oracle):
            taken.set()

    thread = threading.Thread(target=other_thread, daemon=True)
    thread.start()
    assert taken.wait(timeout=10), "the lock was left held"

    @keras_tuner.synchronized
    def failing(_: object) -> None:
        raise ValueError("inside KerasTuner's decorator")

    with pytest.raises(ValueError):
        failing(oracle)
    from keras_tuner.src.engine import oracle as oracle_module

    assert oracle_module.LOCKS[oracle].locked()  # the defect this lock works around
    oracle_module.THREADS[oracle] = None
    oracle_module.LOCKS[oracle].release()


_OURS = ("kt_pipeline", "hypermodels")
ROOT = Path(__file__).parents[1]

#: Underscored names read outside `_compat.py` that are public all the same.
_PUBLIC_UNDERSCORES = {"os._exit", "details._replace"}  # a namedtuple's own method


def _modules() -> list[str]:
    names = [
        f"{package}.{path.stem}" if path.stem != "__init__" else package
        for package in _OURS
        for path in sorted((ROOT / package).glob("*.py"))
    ]
    return [n for n in names if n not in ("kt_pipeline._compat", "kt_pipeline.__main__")]


def test_no_private_method_of_keras_tuner_keras_or_tensorflow_is_overridden_elsewhere() -> None:
    """Our classes extend KerasTuner's and Keras's private steps only through
    `_compat`'s hooks (`TunerHooks`, `OracleHooks`, `OptimizerHooks`)."""
    overridden = set()
    for name in _modules():
        for cls in vars(importlib.import_module(name)).values():
            if not inspect.isclass(cls) or not cls.__module__.startswith(_OURS):
                continue
            foreign = [b for b in cls.__mro__ if not b.__module__.startswith(_OURS)]
            for ours in cls.__mro__:
                if not ours.__module__.startswith(_OURS) or ours.__module__.endswith("_compat"):
                    continue
                overridden |= {
                    f"{ours.__module__}.{ours.__qualname__}.{attr}"
                    for attr in vars(ours)
                    if attr.startswith("_")
                    and not attr.startswith("__")
                    and attr != "_abc_impl"
                    and any(attr in vars(base) for base in foreign)
                }
    assert not overridden, sorted(overridden)


def test_no_private_attribute_of_another_object_is_read_elsewhere() -> None:
    read = set()
    for name in _modules():
        path = ROOT / (name.replace(".", "/") + ("/__init__.py" if "." not in name else ".py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            owner = node.value
            if node.attr.startswith("__") or (
                isinstance(owner, ast.Name) and owner.id in ("self", "cls")
            ):
                continue
            read.add(ast.unparse(node))
    assert read == _PUBLIC_UNDERSCORES, sorted(read - _PUBLIC_UNDERSCORES)


def _foreign_sources(classes: list[type]) -> dict[type, str]:
    """Each of our classes, with the source of every KerasTuner, Keras or TensorFlow
    class above it, or above any class that mixes it in."""
    sources: dict[type, str] = {}
    for cls in classes:
        foreign = [b for b in cls.__mro__ if not b.__module__.startswith(_OURS) and b is not object]
        text = ""
        for base in foreign:
            with contextlib.suppress(OSError, TypeError):
                text += inspect.getsource(base)
        for ours in cls.__mro__:
            if ours.__module__.startswith(_OURS):
                sources[ours] = sources.get(ours, "") + text
    return sources


def test_no_private_state_of_keras_tuner_or_keras_is_used_through_self_elsewhere() -> None:
    """A subclass that reads or writes ``self._x``, where ``_x`` is KerasTuner's or
    Keras's own state (an oracle's draw counter, an optimizer's slot lists), goes
    through `_compat` (`OracleHooks.next_seed`, `OptimizerHooks.slot`, ...)."""
    classes = [
        cls
        for name in _modules()
        for cls in vars(importlib.import_module(name)).values()
        if inspect.isclass(cls) and cls.__module__ == name
    ]
    sources = _foreign_sources(classes)
    used = set()
    for cls in classes:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and re.search(rf"self\.{node.attr}\b", sources.get(cls, ""))
            ):
                used.add(f"{cls.__module__}.{cls.__qualname__}: self.{node.attr}")
    assert not used, sorted(used)
