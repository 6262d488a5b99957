"""The lock files agree with each other and with pyproject.toml.

All offline: `make lock-check` (scripts/lock.py --check) is what asks the package index whether each
lock resolves for its platform.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from conftest import REPO

spec = importlib.util.spec_from_file_location("lock_script", REPO / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = lock  # dataclasses look their module up there
spec.loader.exec_module(lock)

TARGETS = {target.lock: target for target in lock.TARGETS}
GPU, MACOS = "requirements-gpu.lock", "requirements-macos-arm64.lock"
# What tensorflow 2.21's `and-cuda` extra asks for (its wheel's Requires-Dist).
CUDA_WHEELS = {f"nvidia-{name}-cu12" for name in (
    "cublas", "cuda-cupti", "cuda-nvcc", "cuda-nvrtc", "cuda-runtime", "cudnn", "cufft", "curand",
    "cusolver", "cusparse", "nccl", "nvjitlink")}


def pins(name: str) -> dict[str, str]:
    return {key: version for key, (_, version) in lock.read_lock(REPO / name).items()}


def test_every_lock_make_lock_writes_is_committed_and_nothing_else():
    assert sorted(path.name for path in REPO.glob("requirements*.lock")) == sorted(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_lock_pins_one_tensorflow_build_of_the_main_locks_version(name):
    """tensorflow and tensorflow-cpu both own the `tensorflow` package: one of them, never both."""
    locked = pins(name)
    wanted = "tensorflow-cpu" if name == lock.MAIN else "tensorflow"
    assert {"tensorflow", "tensorflow-cpu"} & set(locked) == {wanted}
    assert locked[wanted] == pins(lock.MAIN)["tensorflow-cpu"]


@pytest.mark.parametrize("name, extra", [(GPU, CUDA_WHEELS), (MACOS, set())])
def test_platform_locks_pin_the_main_locks_versions_and_add_only_tensorflows_own_wheels(name, extra):
    main, other = pins(lock.MAIN), pins(name)
    assert {key: version for key, version in other.items() if main.get(key, version) != version} == {}
    assert set(main) - set(other) == {"tensorflow-cpu"}
    assert set(other) - set(main) == {"tensorflow"} | extra


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_lock_satisfies_pyproject_and_is_written_as_make_lock_writes_it(name):
    """The pins fit pyproject.toml's ranges (with the lock's TensorFlow wheel), and a rewrite would
    give the same bytes: sorted, one `name==version` a line, the header make lock writes."""
    target, path = TARGETS[name], REPO / name
    read = lock.read_lock(path)
    for text in lock.top_level(target.tensorflow):
        requirement = Requirement(text)
        key = lock.canonical(requirement.name)
        assert key in read, f"{name} does not pin {requirement.name}"
        assert requirement.specifier.contains(read[key][1], prereleases=True), f"{name}: {read[key]} vs {text}"
    spelled = {key: written for key, (written, _) in read.items()}
    assert lock.lock_text(target, read, spelled) == path.read_text()


@pytest.mark.parametrize("system, machine, wanted", [
    ("linux", "x86_64", "tensorflow-cpu"),
    ("win32", "AMD64", "tensorflow-cpu"),
    ("darwin", "arm64", "tensorflow"),
])
def test_pyproject_requires_exactly_one_tensorflow_on_each_machine(system, machine, wanted):
    project = lock.tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = {**default_environment(), "sys_platform": system, "platform_machine": machine}
    required = [Requirement(text) for text in project["dependencies"]]
    tensorflows = [r for r in required if r.name in ("tensorflow", "tensorflow-cpu")
                   and (r.marker is None or r.marker.evaluate(environment))]
    assert [r.name for r in tensorflows] == [wanted]
    assert {str(r.specifier) for r in required if r.name in ("tensorflow", "tensorflow-cpu")} == {"<2.22,>=2.21"}


def test_marker_guard_flags_only_requirements_that_differ_on_the_target():
    """pip evaluates markers for the machine it runs on; the guard names those the target would not share."""
    host = default_environment()
    target = next(t for t in lock.TARGETS if any(host.get(k) != v for k, v in t.markers.items()))
    other = "darwin" if target.markers["sys_platform"] != "darwin" else "linux"
    report = {"install": [
        {"metadata": {"name": "a", "requires_dist": [
            f'b; sys_platform == "{target.markers["sys_platform"]}"',  # needed there, not here
            'c; sys_platform == "win32"',  # needed on neither
            f'd; extra == "used" and sys_platform == "{other}"',
            f'e; extra == "unused" and sys_platform == "{other}"',
        ]}},
    ]}
    found = lock.marker_mismatches(report, ["a[used]"], target)
    assert [line.split(": ", 1)[1].split(";")[0] for line in found] == ["b", "d"]
