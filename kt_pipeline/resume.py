"""Whether an existing experiment may be resumed with the settings given now.

KerasTuner resumes a project with the settings it saved and silently ignores the new
ones: a changed search space, tuner or objective would be mixed with old trials. The
pipeline compares the resolved config with the ``config.toml`` saved beside the
search and refuses to resume when a setting that shapes the search differs. Budget
and runtime settings may change between runs.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypermodels.mlp import SearchSpace
from kt_pipeline import data as data_lib
from kt_pipeline.errors import UserInputError
from kt_pipeline.experiment_files import FINGERPRINT_FILE

__all__ = [
    "ADDED_SETTINGS",
    "RESUMABLE_CHANGES",
    "check_fingerprint",
    "check_resumable",
    "check_search_files",
    "search_differences",
]

#: Settings that may differ from the saved config when a search is resumed: the
#: budget, how and where it runs, and what happens after it. Everything else (data,
#: split, seed, search space, tuner, objective, epochs) shapes the trials.
RESUMABLE_CHANGES = frozenset(
    {
        "data.folds_auto",  # the folds it resolves to are compared
        "tuner.max_trials",
        "tuner.max_consecutive_failed_trials",
        "tuner.max_crashes_per_trial",
        "tuner.time_budget",
        "runtime.experiment_dir",
        "runtime.strategy",
        "runtime.devices",
        "runtime.verbose",
        "runtime.deterministic",
        "runtime.memory_growth",
        "runtime.mixed_precision",
        "runtime.oracle_address",
        "runtime.oracle_bind",
        "runtime.oracle_token_file",
        "runtime.oracle_insecure",
        "runtime.oracle_tls_cert",
        "runtime.oracle_tls_key",
        "runtime.oracle_tls_ca",
        "runtime.worker_lease_seconds",
        "runtime.steps_per_execution",
        "runtime.jit_compile",
        "runtime.graph_optimizer",
        "export.enabled",
        "export.version",
        "export.ensemble",
        "export.verify_in_fresh_process",
        "export.refit",
    }
)


#: Search settings added after experiments were first saved, with the value that runs
#: such an experiment as it ran: a saved config without the key is compared as if it
#: held this value, so a newer default cannot widen an old search unnoticed. The search
#: space's own come from its fields (``before`` in `hypermodels.mlp.SearchSpace`).
ADDED_SETTINGS: Mapping[str, Any] = {
    "data.split": "random",
    "data.screen_identifiers": False,
    "data.folds": 1,
    "search.members_auto": False,
    **{
        f"search.{field.name}": list(field.metadata["before"])
        for field in dataclasses.fields(SearchSpace)
        if "before" in field.metadata
    },
}


def search_differences(
    saved: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """``key: saved -> current`` for every search-shaping setting that differs.

    A key the saved config lacks (a setting added in a newer version) is compared with
    its `ADDED_SETTINGS` value, or else skipped.
    """
    differences = []
    for section, values in current.items():
        saved_values = saved.get(section, {})
        for key, value in values.items():
            name = f"{section}.{key}"
            if name in RESUMABLE_CHANGES or (
                key not in saved_values and name not in ADDED_SETTINGS
            ):
                continue
            old = saved_values.get(key, ADDED_SETTINGS.get(name))
            if _plain(old) != _plain(value):
                differences.append(f"{name} {_plain(old)!r} -> {_plain(value)!r}")
    return differences


def check_resumable(config_file: Path, current: Mapping[str, Mapping[str, Any]]) -> None:
    """Raises when the experiment's saved config and `current` differ in the search.

    A missing saved config (an experiment from before configs were saved) is not
    checked.

    Raises:
        UserInputError: one line that lists what differs, or names the saved config
            when it is not valid TOML (truncated by a full disk, edited by hand).
    """
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as error:
        raise _unreadable(config_file, error, "remove it to resume without this check") from error
    try:
        saved = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _unreadable(config_file, error, "remove it to resume without this check") from error
    differences = search_differences(saved, current)
    if differences:
        raise UserInputError(
            f"experiment directory {str(config_file.parent)!r} holds a search with other "
            f"settings ({'; '.join(differences)}): run it with its saved {config_file.name}, "
            "choose another --experiment-dir, or pass --overwrite to start afresh"
        )


def check_search_files(project: Path) -> None:
    """Reads the KerasTuner state a resume would load (``oracle.json``, the tuners'
    files, every ``trial_<id>/trial.json``), so that a truncated or hand-edited one is
    named in one line instead of failing deep inside KerasTuner.

    Raises:
        UserInputError: the first file that is not valid JSON, and the way out.
    """
    files = [project / "oracle.json", *sorted(project.glob("tuner*.json"))]
    files += sorted(project.glob("trial_*/trial.json"))
    for path in files:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise _unreadable(
                path,
                error,
                "restore it from a backup, or pass --overwrite to start the search afresh",
            ) from error


def _unreadable(path: Path, error: Exception, way_out: str) -> UserInputError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserInputError(f"{str(path)!r} is corrupted ({reason}): {way_out}")


def _plain(value: Any) -> Any:
    """Lists and tuples compare equal; ints and floats compare by value."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def check_fingerprint(
    experiment: Path, dataset: data_lib.Dataset, *, resuming: bool, save: bool
) -> None:
    """Refuses to resume a search on rows other than the ones it ran on, then records
    the rows' fingerprint (`data.fingerprint`) for the next run.

    Raises:
        UserInputError: the saved fingerprint differs; the directory is left as it was.
    """
    path = experiment / FINGERPRINT_FILE
    current = data_lib.fingerprint(dataset)
    if resuming and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserInputError(
                f"{str(path)!r} is not readable ({error}): remove it to resume without the "
                "check, or pass --overwrite to start afresh"
            ) from error
        if saved != current:
            raise UserInputError(
                f"data {dataset.name!r} is not the data the search in {str(experiment)!r} "
                f"ran on (fingerprint {saved} then, {current} now): pass --overwrite to start "
                "afresh, or choose another --experiment-dir"
            )
    if save:
        record = {"data": dataset.name, "fingerprint": current}
        partial = path.with_name(f"{path.name}.partial")  # a full disk leaves the old one
        try:
            partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
