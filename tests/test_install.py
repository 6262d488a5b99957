"""The lock files agree with each other and with pyproject.toml, and `make install` picks the right one.

All offline: `make lock-check` (scripts/lock.py --check) is what asks the package index whether each
lock resolves for its platform.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
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


# --- which lock `make install` picks -------------------------------------------------------------


def fake_machine(tmp_path: Path, system: str, machine: str, gpu: str | None) -> dict[str, str]:
    """A PATH holding a fake uname and, unless gpu is None, a fake nvidia-smi: 'ok' lists a GPU,
    anything else fails as it does when the driver is missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "grep").symlink_to(shutil.which("grep"))
    scripts = {"uname": f'case "$1" in -s) echo {system} ;; -m) echo {machine} ;; esac'}
    if gpu is not None:
        scripts["nvidia-smi"] = ('echo "GPU 0: NVIDIA H100 (UUID: GPU-0)"' if gpu == "ok" else
                                 'echo "NVIDIA-SMI has failed because it could not communicate"; exit 9')
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": str(bin_dir)}


@pytest.mark.parametrize("system, machine, smi, gpu_var, wanted", [
    ("Linux", "x86_64", None, None, "requirements.lock"),
    ("Linux", "x86_64", "fails", None, "requirements.lock"),
    ("Linux", "x86_64", "ok", None, GPU),
    ("Linux", "x86_64", "ok", "0", "requirements.lock"),
    ("Linux", "x86_64", None, "1", GPU),
    ("Darwin", "arm64", None, None, MACOS),
    ("Darwin", "arm64", None, "0", MACOS),
    ("Darwin", "arm64", None, "1", None),  # no CUDA build for macOS
    ("Darwin", "x86_64", None, None, None),  # TensorFlow 2.21 has no Intel-mac wheel
    ("Linux", "aarch64", None, None, None),
    ("Linux", "x86_64", None, "yes", None),
])
def test_choose_lock_picks_the_lock_for_the_machine_and_says_why(tmp_path, system, machine, smi, gpu_var, wanted):
    env = fake_machine(tmp_path, system, machine, smi)
    if gpu_var is not None:
        env["GPU"] = gpu_var
    done = subprocess.run(["/bin/sh", str(REPO / "scripts" / "choose_lock.sh")], env=env,
                          capture_output=True, text=True)
    if wanted is None:
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.startswith("choose_lock.sh: ")
    else:
        assert done.returncode == 0, done.stderr
        chosen, reason = done.stdout.strip().split(" ", 1)
        assert chosen == wanted and (REPO / chosen).is_file()
        assert reason


STUB_PYTHON = """\
#!/bin/sh
# Stands in for python3: `-m venv DIR` makes DIR/bin/python, which logs its arguments and succeeds.
[ "$1 $2" = "-m venv" ] || exit 1
mkdir -p "$3/bin"
printf '#!/bin/sh\\necho "$*" >> %s/calls.log\\n' "$3" > "$3/bin/python"
chmod +x "$3/bin/python"
"""


@pytest.fixture
def make_install(tmp_path):
    """Runs the Makefile's install with a stub python, so nothing is installed or downloaded."""
    stub = tmp_path / "python3"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GPU", "PYTHONDONTWRITEBYTECODE")}

    def run(gpu: str, **extra_env: str) -> tuple[str, list[str]]:
        done = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "install", f"GPU={gpu}",
                               f"VENV={venv}", f"PYTHON={stub}"], env=env | extra_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        log = venv / "calls.log"
        return done.stdout, log.read_text().splitlines() if log.exists() else []

    return venv, run


def uv_install(venv: Path) -> str:
    """How the install calls uv: through the venv's python, installing into it."""
    return f"-m uv pip install --quiet --python {venv}/bin/python"


def test_make_install_installs_the_chosen_lock_and_remakes_the_venv_when_the_choice_changes(make_install):
    venv, install = make_install
    UV = uv_install(venv)
    out, calls = install("1")
    assert "install: requirements-gpu.lock (GPU=1 given" in out
    assert calls[0].startswith("-m pip install --quiet --disable-pip-version-check uv==")
    assert f"{UV} -r requirements-gpu.lock pip>=24" in calls
    assert calls[-1] == f"{UV} --no-deps --no-build-isolation -e ."
    assert (venv / ".installed").read_text() == "requirements-gpu.lock\n"

    assert install("1")[1] == calls  # up to date: nothing runs again

    (venv / "left-by-the-gpu-install").touch()
    out, calls = install("0")
    assert "making it afresh" in out and not (venv / "left-by-the-gpu-install").exists()
    assert f"{UV} -r requirements.lock pip>=24" in calls
    assert not any("requirements-gpu.lock" in call for call in calls)
    assert (venv / ".installed").read_text() == "requirements.lock\n"


def test_a_stamp_from_before_the_choice_counts_as_the_cpu_lock(make_install):
    """Existing .venv/.installed stamps are empty and came from requirements.lock: no rebuild on a CPU."""
    venv, install = make_install
    UV = uv_install(venv)
    install("0")
    (venv / ".installed").write_text("")
    (venv / "kept").touch()
    out, calls = install("0")
    assert "afresh" not in out and (venv / "kept").exists()
    assert calls.count(f"{UV} -r requirements.lock pip>=24") == 2


def test_the_stack_is_byte_compiled_at_install_only_where_python_may_not_write_bytecode(make_install):
    """With PYTHONDONTWRITEBYTECODE set, every stage would compile TensorFlow afresh on import."""
    venv, install = make_install
    UV = uv_install(venv)
    assert f"{UV} -r requirements.lock pip>=24" in install("0")[1]
    (venv / ".installed").unlink()
    assert f"{UV} --compile-bytecode -r requirements.lock pip>=24" in install("0", PYTHONDONTWRITEBYTECODE="1")[1]
