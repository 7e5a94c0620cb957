"""requirements.lock (the exact set CI installs) against pyproject.toml (the ranges users get)."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def locked_versions(text: str) -> dict[str, str]:
    """{canonical name: version} of a pip-compile output (`name==version` lines)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, separator, version = line.partition("==")
        if not separator:
            raise ValueError(f"requirements.lock: not an exact pin: {line!r}")
        pins[canonicalize_name(name.split("[")[0])] = version.split(";")[0].strip()
    return pins


def unmet(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """The requirements (that apply on this platform) the pinned versions do not satisfy."""
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{text}: not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{text}: locked at {version}")
    return problems


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lock() -> dict[str, str]:
    return locked_versions((ROOT / "requirements.lock").read_text())


def test_the_lock_satisfies_every_range_of_pyproject():
    project = _project()
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    assert unmet(requirements, _lock()) == []


def test_the_lock_holds_torch_at_the_builds_of_lock_constraints():
    constraints = locked_versions((ROOT / "lock-constraints.txt").read_text())
    assert set(constraints) == {"torch", "torchvision"}
    lock = _lock()
    assert {name: lock[name] for name in constraints} == constraints


def test_the_check_reports_missing_and_out_of_range_pins():
    lock = "torch==2.14.1\n    # via labelmatch\nnumpy==1.20.0 ; python_version > '3'\n"
    pins = locked_versions(lock)
    assert pins == {"torch": "2.14.1", "numpy": "1.20.0"}
    assert unmet(["torch>=2.4", "numpy>=1.24", "ruff>=0.5"], pins) == [
        "numpy>=1.24: locked at 1.20.0",
        "ruff>=0.5: not in the lock",
    ]
    assert unmet(['tomli; python_version < "3"'], pins) == []  # not for this platform
    with pytest.raises(ValueError, match="not an exact pin"):
        locked_versions("torch>=2\n")
