"""The project and the example plugin build with an SPDX license and no deprecation banner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plugins" / "example_package"
SPDX_SETUPTOOLS = Version("77")

# Runs the build backend as pip would (without build isolation: no network), recording
# every warning the backend raises, in the project copy it is started in.
_BUILD = """
import json, sys, warnings
from setuptools import build_meta
out, record_path = sys.argv[1:3]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    wheel = build_meta.build_wheel(out)
record = {"wheel": wheel, "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}
open(record_path, "w").write(json.dumps(record))
"""

_NOT_SOURCES = shutil.ignore_patterns(
    ".*", "__pycache__", "build", "dist", "*.egg-info", "example_package", "var", "run"
)


def _copy_project(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=_NOT_SOURCES)
    return target


def _build(project: Path, out: Path) -> tuple[zipfile.ZipFile, list[str], str]:
    if Version(setuptools.__version__) < SPDX_SETUPTOOLS:
        pytest.fail(f"setuptools {setuptools.__version__} here; the build needs >= 77")
    record = out / "record.json"
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out), str(record)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(record.read_text())
    return zipfile.ZipFile(out / result["wheel"]), result["warnings"], done.stdout + done.stderr


def _metadata(wheel: zipfile.ZipFile) -> tuple[list[str], str]:
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    [license_file] = [n for n in wheel.namelist() if ".dist-info/licenses/" in n]
    return wheel.read(metadata).decode().splitlines(), wheel.read(license_file).decode()


@pytest.mark.parametrize("project", [ROOT, EXAMPLE], ids=["vpnbot", "example_plugin"])
def test_the_wheel_says_mit_in_spdx_without_a_deprecation_warning(
    project: Path, tmp_path: Path
) -> None:
    copy = _copy_project(project, tmp_path / "project")
    out = tmp_path / "dist"
    out.mkdir()

    wheel, warnings, output = _build(copy, out)

    assert [w for w in warnings if "Deprecat" in w or "license" in w.lower()] == []
    assert "deprecated" not in output.lower()
    lines, license_text = _metadata(wheel)
    assert "License-Expression: MIT" in lines
    assert "License-File: LICENSE" in lines
    assert not [line for line in lines if line.startswith("License:")]
    assert license_text.startswith("MIT License")


@pytest.mark.parametrize("project", [ROOT, EXAMPLE], ids=["vpnbot", "example_plugin"])
def test_the_build_requires_a_setuptools_that_reads_spdx_licenses(project: Path) -> None:
    document = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    [setuptools_requirement] = [
        Requirement(text)
        for text in document["build-system"]["requires"]
        if Requirement(text).name == "setuptools"
    ]
    assert not setuptools_requirement.specifier.contains("76.99")
    assert setuptools_requirement.specifier.contains(str(SPDX_SETUPTOOLS))
