"""`kt-pipeline doctor` on this CPU-only host, and on hosts it can only be told about:
a driver that reports GPUs TensorFlow does not see, and mismatched versions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kt_pipeline import _compat, doctor
from kt_pipeline.cli import main


def test_a_cpu_host_is_usable_and_says_it_has_no_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "No GPU: searches run on the CPU." in out
    assert "Usable: yes" in out
    for name in ("python", "tensorflow", "keras", "keras-tuner"):
        assert f"\n  {name} " in out


def test_json_report_for_machines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is True and report["problems"] == []
    assert "cuda_version" in report["build"]
    assert any(device["type"] == "CPU" for device in report["devices"])


def test_gpus_the_driver_reports_but_tensorflow_cannot_see_make_the_host_unusable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(doctor, "driver_gpus", lambda: ["NVIDIA H200", "NVIDIA H200"])
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "Warning: the NVIDIA driver reports 2 GPU(s) but TensorFlow sees 0" in out
    assert "tensorflow[and-cuda]" in out and "Usable: no" in out
    assert "No GPU: searches run on the CPU." not in out  # there are GPUs; they are unused


def test_versions_the_hooks_were_not_written_for_make_the_host_unusable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(_compat.WRITTEN_FOR, "keras-tuner", "9.9")
    assert main(["doctor"]) == 1
    assert "Problem: kt-pipeline's fixes" in capsys.readouterr().out


def test_driver_gpus_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert doctor.driver_gpus() is None  # no tool: no NVIDIA driver here
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\nprintf 'NVIDIA H200\\nNVIDIA H200\\n'\n", encoding="utf-8")
    tool.chmod(0o755)
    assert doctor.driver_gpus() == ["NVIDIA H200", "NVIDIA H200"]
    tool.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n", encoding="utf-8")
    assert doctor.driver_gpus() == []  # a tool that fails: a driver that reports none
    assert os.access(tool, os.X_OK)


def _fake_wheel(site: Path, name: str, version: str, library: str) -> None:
    """An installed distribution as pip leaves one: metadata, and a RECORD of its files."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    (site / "nvidia" / "lib").mkdir(parents=True, exist_ok=True)
    (site / "nvidia" / "lib" / library).write_bytes(b"\x7fELF")
    (info / "RECORD").write_text(f"nvidia/lib/{library},,\n", encoding="utf-8")


def test_the_cuda_wheels_are_checked_against_what_tensorflow_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = {w["package"]: w for w in doctor.cuda_libraries()}
    assert "nvidia-cudnn-cu12" in wheels and "nvidia-cuda-runtime-cu12" in wheels
    assert not any(w["installed"] for w in wheels.values())  # a CPU install: no problem
    _fake_wheel(tmp_path, "nvidia-cudnn-cu12", "8.9.7.29", "libcudnn.so.8")
    monkeypatch.syspath_prepend(str(tmp_path))
    cudnn = {w["package"]: w for w in doctor.cuda_libraries()}["nvidia-cudnn-cu12"]
    assert cudnn["installed"] == "8.9.7.29" and not cudnn["matches"]
    assert cudnn["libraries"] == ["libcudnn.so.8"]
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "Problem: nvidia-cudnn-cu12 8.9.7.29 is installed; TensorFlow needs" in out
    assert "Problem: nvidia-cuda-runtime-cu12 is not installed" in out  # the set is partial
    assert "Problem: nvidia-cudnn-cu12 8.9.7.29 does not fit the 9 TensorFlow was built with" in out


def test_wheels_of_the_versions_tensorflow_was_built_with_pass_and_older_ones_fail() -> None:
    build = {"cuda_version": "12.5.1", "cudnn_version": "9"}

    def wheels(cuda: str, cudnn: str) -> list[dict[str, object]]:
        return [
            {"package": "nvidia-cuda-runtime-cu12", "installed": cuda},
            {"package": "nvidia-cudnn-cu12", "installed": cudnn},
        ]

    assert doctor._build_problems(build, wheels("12.9.79", "9.28.0.42")) == []
    assert doctor._build_problems(build, wheels("12.5.82", "9.3.0.75")) == []
    problems = doctor._build_problems(build, wheels("12.4.127", "10.1.0"))
    assert len(problems) == 2 and "12.4.127 does not fit the 12.5.1" in problems[0]
