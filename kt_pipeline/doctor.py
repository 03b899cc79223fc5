"""``kt-pipeline doctor``: can this host run a search, and on which devices?

A GPU host can look ready and still train on the CPU: a TensorFlow built for another
CUDA or cuDNN, or a container that does not see the driver, leaves TensorFlow with no
GPU and no error. The doctor reports the versions that matter, the CUDA and cuDNN
TensorFlow was built with and the CUDA and cuDNN wheels its ``and-cuda`` extra installs
(so an image can be checked on a host without a GPU), every device TensorFlow sees (each
GPU runs a small matmul), and the GPUs the NVIDIA driver reports next to them, and says
plainly when they differ.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Diagnosis", "cuda_libraries", "diagnose", "driver_gpus"]

_SMI_TIMEOUT = 20.0


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What `diagnose` found; `usable` decides the exit code."""

    versions: dict[str, str]
    build: dict[str, Any]  # CUDA and cuDNN TensorFlow was built with
    devices: list[dict[str, Any]]  # name, type, and for GPUs whether a matmul ran
    driver_gpus: list[str] | None  # None: no NVIDIA driver tool on this host
    cuda_libraries: list[dict[str, Any]]  # `cuda_libraries`
    warnings: list[str]
    problems: list[str]  # what makes the host unusable

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "usable": self.usable}

    def _wheels(self) -> str:
        installed = [w for w in self.cuda_libraries if w["installed"]]
        if not installed:
            return "none installed"
        good = sum(w["matches"] and bool(w["libraries"]) for w in self.cuda_libraries)
        shown = "".join(
            f", {name} {w['installed']} (built with {w['built_with']})"
            for w in installed
            for package, name in (
                ("nvidia-cudnn-cu12", "cuDNN"),
                ("nvidia-cuda-runtime-cu12", "CUDA runtime"),
            )
            if w["package"] == package and "built_with" in w
        )
        return f"{good} of {len(self.cuda_libraries)} installed as TensorFlow needs{shown}"

    def format(self) -> str:
        """The report as text for a terminal."""
        lines = ["Versions:"]
        lines += [f"  {name:<12} {version}" for name, version in self.versions.items()]
        cuda = self.build.get("cuda_version") or "none"
        cudnn = self.build.get("cudnn_version") or "none"
        lines += ["", f"TensorFlow built with CUDA {cuda}, cuDNN {cudnn}"]
        lines.append(f"CUDA and cuDNN wheels (tensorflow[and-cuda]): {self._wheels()}")
        lines += ["", "Devices:"]
        for device in self.devices:
            check = ""
            if device["type"] == "GPU":
                check = (
                    " (matmul ok)" if device["matmul"] else f" (matmul FAILED: {device['error']})"
                )
            lines.append(f"  {device['name']}{check}")
        gpus = [d for d in self.devices if d["type"] == "GPU"]
        if self.driver_gpus is None:
            driver = "no NVIDIA driver tool (nvidia-smi) on this host"
        else:
            driver = f"{len(self.driver_gpus)} GPU(s): " + ", ".join(self.driver_gpus or ["none"])
        lines += ["", f"NVIDIA driver: {driver}"]
        if not gpus and not self.driver_gpus:
            lines.append("No GPU: searches run on the CPU.")
        lines.append("")
        lines += [f"Warning: {w}" for w in self.warnings]
        lines += [f"Problem: {p}" for p in self.problems]
        lines.append("Usable: yes" if self.usable else "Usable: no")
        return "\n".join(lines)


def driver_gpus() -> list[str] | None:
    """The GPUs the NVIDIA driver reports (``nvidia-smi``), or None without the tool."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_SMI_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def cuda_libraries() -> list[dict[str, Any]]:
    """The wheels TensorFlow's ``and-cuda`` extra asks for (CUDA's runtime and libraries,
    cuDNN, NCCL), read from TensorFlow's own requirements: each one's ``package``,
    ``required`` versions, ``installed`` version (None: absent), whether it ``matches``,
    and the shared ``libraries`` it put on disk (``libcudnn.so.9``, ...). `diagnose` adds
    ``built_with`` to cuDNN and the CUDA runtime: the version TensorFlow was built with."""
    from packaging.requirements import Requirement

    wheels = []
    for text in metadata.requires("tensorflow") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or not marker.evaluate({"extra": "and-cuda"}):
            continue
        if marker.evaluate({"extra": ""}):  # a plain requirement with another marker
            continue
        try:
            wheel = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            installed, libraries = None, []
        else:
            installed = wheel.version
            libraries = sorted(
                Path(str(f)).name
                for f in wheel.files or []
                if ".so" in Path(str(f)).name and Path(str(wheel.locate_file(f))).is_file()
            )
        wheels.append(
            {
                "package": requirement.name,
                "required": str(requirement.specifier),
                "installed": installed,
                "matches": installed is not None
                and requirement.specifier.contains(installed, prereleases=True),
                "libraries": libraries,
            }
        )
    return wheels


def _wheel_problems(wheels: list[dict[str, Any]]) -> list[str]:
    """Wheels that are there but not what TensorFlow needs; none at all is a CPU install."""
    if not any(w["installed"] for w in wheels):
        return []
    problems = []
    for wheel in wheels:
        if not wheel["installed"]:
            problems.append(f"{wheel['package']} is not installed ({wheel['required']} needed)")
        elif not wheel["matches"]:
            problems.append(
                f"{wheel['package']} {wheel['installed']} is installed; TensorFlow needs "
                f"{wheel['required']}"
            )
        elif not wheel["libraries"]:
            problems.append(f"{wheel['package']} {wheel['installed']} ships no shared library")
    return problems


#: The wheels whose versions TensorFlow's build info names: cuDNN must be the major
#: version it was built with; the CUDA runtime the same major version, no older minor.
_BUILT_WITH = {"nvidia-cudnn-cu12": "cudnn_version", "nvidia-cuda-runtime-cu12": "cuda_version"}


def _build_problems(build: dict[str, Any], wheels: list[dict[str, Any]]) -> list[str]:
    """The installed cuDNN and CUDA runtime wheels against `tf.sysconfig.get_build_info`."""
    problems = []
    for wheel in wheels:
        key = _BUILT_WITH.get(wheel["package"])
        built = str(build.get(key) or "") if key else ""
        if not built or not wheel["installed"]:
            continue
        have = [int(part) for part in wheel["installed"].split(".")[:2] if part.isdigit()]
        want = [int(part) for part in built.split(".")[:2] if part.isdigit()]
        wheel["built_with"] = built
        same_major = have[:1] == want[:1]
        old_minor = len(want) > 1 and len(have) > 1 and have[1] < want[1]
        if not same_major or old_minor:
            problems.append(
                f"{wheel['package']} {wheel['installed']} does not fit the {built} "
                "TensorFlow was built with"
            )
    return problems


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("kt-pipeline", "tensorflow", "keras", "keras-tuner"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _matmul(device: str) -> str | None:
    """None if a small matmul runs on `device`, else the error."""
    import tensorflow as tf

    try:
        with tf.device(device):
            x = tf.random.stateless_normal((64, 64), seed=(1, 2))
            float(tf.reduce_sum(tf.matmul(x, x)).numpy())
    except Exception as error:  # any failure is the answer here, reported as text
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def diagnose() -> Diagnosis:
    """Checks this host; never raises for what it finds."""
    import tensorflow as tf

    from kt_pipeline import _compat
    from kt_pipeline.errors import UserInputError

    versions = _versions()
    build = {
        key: value
        for key, value in dict(tf.sysconfig.get_build_info()).items()
        if key in ("cuda_version", "cudnn_version", "is_cuda_build")
    }
    wheels = cuda_libraries()
    warnings: list[str] = []
    problems: list[str] = _wheel_problems(wheels) + _build_problems(build, wheels)
    try:
        _compat.check_versions()
    except UserInputError as mismatch:
        problems.append(str(mismatch))
    devices = []
    for device in tf.config.list_physical_devices():
        name = device.name.replace("/physical_device:", "/")
        entry: dict[str, Any] = {"name": name, "type": device.device_type}
        if device.device_type in ("GPU", "CPU"):
            error = _matmul(name)
            if device.device_type == "GPU":
                entry.update(matmul=error is None, error=error)
            if error is not None:
                problems.append(f"a matmul on {name} failed: {error}")
        devices.append(entry)
    seen = sum(d["type"] == "GPU" for d in devices)
    reported = driver_gpus()
    if reported and seen < len(reported):
        warnings.append(
            f"the NVIDIA driver reports {len(reported)} GPU(s) but TensorFlow sees {seen}: "
            f"TensorFlow (built with CUDA {build.get('cuda_version') or 'none'}, cuDNN "
            f"{build.get('cudnn_version') or 'none'}) cannot use them, so searches would run "
            "on the CPU. Install `tensorflow[and-cuda]` or use an image whose CUDA and cuDNN "
            "match."
        )
        problems.append("TensorFlow does not see every GPU the driver reports")
    return Diagnosis(versions, build, devices, reported, wheels, warnings, problems)
