"""Write (`make lock`) or check (`make lock-check`) the lock files, one per kind of machine.

Each lock is resolved by pip for its own platform from any machine, installing nothing:
`pip install --dry-run --ignore-installed --report` with that platform's wheel tags, Python 3.11 and
wheels only (a wheel is what the target machine will install; an sdist would be built there).

Writing: pyproject.toml's requirements plus the dev extra, with the TensorFlow wheel of the target
(tensorflow-cpu, tensorflow[and-cuda] or tensorflow), under the pins of requirements.lock as
constraints, so that every lock pins the same versions wherever the platforms allow; each lock's own
extra pins (the CUDA wheels) are kept too. --upgrade drops today's pins: newest versions that fit.
Every package pip would install is pinned, setuptools and wheel too: tensorflow and astunparse
require them, and a venv of Python 3.11 has an old setuptools and no wheel.

Checking: each lock file alone must resolve for its platform to exactly its own pins: every pinned
version has a wheel there, and no pin is missing or conflicts with another.

pip evaluates environment markers (`; sys_platform == ...`) for the machine it runs on, not for
--platform, so both modes fail if a marker in the stack would evaluate differently on the target.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: pip carries its own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
MAIN = "requirements.lock"
PYTHON = "3.11"
HEADER = "# Exact versions of the whole stack ({}). Regenerate: make lock\n"

# glibc 2.28 and newer (some pinned wheels, e.g. dulwich, are manylinux_2_28); pip does not widen a
# manylinux_2_X tag to older ones, so every X is listed (manylinux2014 widens to 2010 and manylinux1).
LINUX = tuple(f"manylinux_2_{x}_x86_64" for x in range(28, 4, -1)) + ("manylinux2014_x86_64",)
# pip widens a macOS tag to the older versions; numpy's and scipy's cp311 arm64 wheels need 14.
MACOS = ("macosx_14_0_arm64",)
LINUX_ENV = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}
MACOS_ENV = {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64", "os_name": "posix"}

# Pure-Python packages published only as an sdist: built here into a py3-none-any wheel, which fits
# every platform, so that the resolution can stay wheels-only (omegaconf, via dvc, needs 4.9.*).
SOURCE_ONLY = ("antlr4-python3-runtime",)


@dataclass(frozen=True)
class Target:
    lock: str
    tensorflow: str  # the distribution (and extra) that provides `import tensorflow` there
    platforms: tuple[str, ...]
    markers: dict[str, str]
    machine: str  # for the header and messages


TARGETS = (
    Target(MAIN, "tensorflow-cpu", LINUX, LINUX_ENV, "python 3.11, Linux x86_64"),
    Target("requirements-gpu.lock", "tensorflow[and-cuda]", LINUX, LINUX_ENV,
           "python 3.11, Linux x86_64, NVIDIA GPU: tensorflow[and-cuda]"),
    Target("requirements-macos-arm64.lock", "tensorflow", MACOS, MACOS_ENV, "python 3.11, macOS 14+ arm64"),
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonical(name)] = (name.strip(), version.strip())
    return pins


def top_level(tensorflow: str) -> list[str]:
    """pyproject.toml's requirements and the dev extra, with `tensorflow` as the TensorFlow wheel.

    pyproject picks tensorflow-cpu or tensorflow by machine with markers, which pip would evaluate for
    this machine; the lock decides instead, keeping pyproject's version range.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements, version_range = [], None
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        if canonical(requirement.name) in ("tensorflow", "tensorflow-cpu"):
            version_range = str(requirement.specifier)
        else:
            requirements.append(text)
    if version_range is None:
        raise SystemExit("pyproject.toml names no tensorflow or tensorflow-cpu requirement")
    return requirements + [tensorflow + version_range]


def build_source_only(pins: dict[str, tuple[str, str]], into: Path) -> None:
    """Wheels of the SOURCE_ONLY packages at their pinned versions, for --find-links."""
    for name in SOURCE_ONLY:
        if canonical(name) not in pins:
            continue
        spec = f"{name}=={pins[canonical(name)][1]}"
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-binary", name, spec, "-w", str(into)])
        built = [w.name for w in into.glob(f"{name.replace('-', '_')}-*.whl")]
        if not built or not all(w.endswith("-none-any.whl") for w in built):
            raise SystemExit(f"{spec} did not build into a pure-Python wheel: {built}")


class ResolutionError(Exception):
    """pip said no; its message is the error's text."""


def run(command: list[str]) -> None:
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise ResolutionError(done.stdout.strip())


def resolve(target: Target, requirements: list[str], constraints: list[str], wheels: Path, work: Path) -> dict:
    """pip's report of what it would install on the target, from an empty environment."""
    (work / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (work / "constraints.txt").write_text("\n".join(constraints) + "\n")
    report = work / "report.json"
    platforms = [arg for tag in target.platforms for arg in ("--platform", tag)]
    run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
         "--python-version", PYTHON, "--implementation", "cp", "--abi", "cp" + PYTHON.replace(".", ""),
         *platforms, "--only-binary=:all:", "--find-links", str(wheels),
         "-c", str(work / "constraints.txt"), "-r", str(work / "requirements.txt")])
    return json.loads(report.read_text())


def marker_mismatches(report: dict, requirements: list[str], target: Target) -> list[str]:
    """Requirements whose marker pip evaluated for this machine differently from the target."""
    host = default_environment()
    if all(host.get(key) == value for key, value in target.markers.items()):
        return []
    wanted = [(None, text) for text in requirements]  # (who asks, requirement)
    for item in report["install"]:
        wanted += [(item["metadata"]["name"], text) for text in item["metadata"].get("requires_dist") or []]
    extras: dict[str, set[str]] = {}
    for _, text in wanted:
        requirement = Requirement(text)
        extras.setdefault(canonical(requirement.name), {""}).update(requirement.extras)
    found = []
    for who, text in wanted:
        marker = Requirement(text).marker
        for extra in extras.get(canonical(who or ""), {""}):
            if marker and marker.evaluate({**host, "extra": extra}) != marker.evaluate(
                    {**host, **target.markers, "extra": extra}):
                found.append(f"{who or 'pyproject.toml'}: {text}")
                break
    return found


def pins_of(report: dict) -> dict[str, tuple[str, str]]:
    return {canonical(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"]}


def lock_text(target: Target, pins: dict[str, tuple[str, str]], spelled: dict[str, str]) -> str:
    """Sorted by name; each name spelled as the locks spelled it before, so a rewrite changes only pins."""
    names = {key: spelled.get(key, name) for key, (name, _) in pins.items()}
    return HEADER.format(target.machine) + "".join(
        f"{names[key]}=={pins[key][1]}\n" for key in sorted(pins, key=lambda key: names[key].lower()))


def constraints_for(target: Target, main: dict[str, tuple[str, str]], upgrade: bool) -> dict[str, tuple[str, str]]:
    """The pins a target's resolution must keep: the main lock's, with its TensorFlow version in the
    target's wheel, and (unless upgrading) the target's own extra pins, such as the CUDA wheels."""
    if target.lock == MAIN:
        return {} if upgrade else dict(main)
    pins = dict(main)
    _, version = pins.pop("tensorflow-cpu")
    pins["tensorflow"] = ("tensorflow", version)
    own = ROOT / target.lock
    if own.exists() and not upgrade:
        pins = {**read_lock(own), **pins}
    return pins


def write(upgrade: bool) -> None:
    main = read_lock(ROOT / MAIN)
    texts = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            build_source_only(main, work / "wheels")
        except ResolutionError as error:
            raise SystemExit(str(error))
        for target in TARGETS:  # the main lock first: the others follow its new pins
            requirements = top_level(target.tensorflow)
            constraints = [f"{name}=={version}" for name, version in constraints_for(target, main, upgrade).values()]
            try:
                report = resolve(target, requirements, constraints, work / "wheels", work)
            except ResolutionError as error:
                hint = "" if upgrade else " with the pins of today (make lock UPGRADE=1 lets them move)"
                raise SystemExit(f"{target.lock}: does not resolve for {target.machine}{hint}:\n{error}")
            mismatches = marker_mismatches(report, requirements, target)
            if mismatches:
                raise SystemExit(f"{target.lock}: pip evaluated these markers for this machine, not the target:\n  "
                                 + "\n  ".join(mismatches))
            spelled = {key: name for lock in (ROOT / target.lock, ROOT / MAIN) if lock.exists()
                       for key, (name, _) in read_lock(lock).items()}
            texts[target.lock] = lock_text(target, pins_of(report), spelled)
            if target.lock == MAIN:
                main = pins_of(report)
    for lock, text in texts.items():  # only once every lock has resolved
        (ROOT / lock).write_text(text)
        print(f"{lock}: {len(text.splitlines()) - 1} pins")


def check() -> bool:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for target in TARGETS:
            pins = read_lock(ROOT / target.lock)
            wheels = work / target.lock
            requirements = [f"{name}=={version}" for name, version in pins.values()]
            try:
                build_source_only(pins, wheels)
                report = resolve(target, requirements, [], wheels, work)
            except ResolutionError as error:
                print(f"{target.lock}: FAILS to resolve for {target.machine}:\n{error}")
                ok = False
                continue
            got = pins_of(report)
            problems = [f"missing {name}=={version}" for key, (name, version) in got.items() if key not in pins]
            problems += [f"{pins[key][0]}=={pins[key][1]} resolves as {version}"
                         for key, (_, version) in got.items() if key in pins and pins[key][1] != version]
            problems += [f"evaluated for this machine: {text}" for text in marker_mismatches(report, requirements, target)]
            if problems:
                print(f"{target.lock}: FAILS for {target.machine}: " + "; ".join(problems))
                ok = False
            else:
                print(f"{target.lock}: {len(pins)} pins resolve for {target.platforms[0]}, "
                      f"cp{PYTHON.replace('.', '')}, wheels only: none missing, none in conflict")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check that each lock resolves; write nothing")
    parser.add_argument("--upgrade", action="store_true", help="let every pin move to the newest version that fits")
    args = parser.parse_args()
    if args.check:
        sys.exit(0 if check() else 1)
    write(args.upgrade)


if __name__ == "__main__":
    main()
