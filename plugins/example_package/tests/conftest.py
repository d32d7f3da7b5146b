"""The plugin under test is installed where only these tests see it.

Installed into the environment, it would join every ``vpnbot run`` there: running the
tests must not change what the service runs. So it is built and installed by pip (no
network, no build isolation: the environment's setuptools) into
``build/test-install/<hash of its sources>``, and that directory is put first on
``sys.path`` of the test process before the tests are imported. The entry point is found
there like an installed one; changed sources make a new install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
INSTALLS = PACKAGE / "build" / "test-install"
_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "src")


def _source_files() -> list[Path]:
    files: list[Path] = []
    for name in _SOURCES:
        path = PACKAGE / name
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [
            file
            for file in found
            if file.is_file()
            and "__pycache__" not in file.parts
            and not any(part.endswith(".egg-info") for part in file.parts)
        ]
    return files


def sources_digest() -> str:
    digest = hashlib.sha256()
    for file in _source_files():
        digest.update(file.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def install_privately() -> Path:
    """The directory the package is installed in, installing it first if needed.

    Test processes running at once each install into a staging directory and rename it into
    place; the first rename wins and the others drop their copy.
    """
    target = INSTALLS / sources_digest()
    if target.is_dir():
        return target
    INSTALLS.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=INSTALLS))
    try:
        copy = stage / "source"
        for file in _source_files():
            destination = copy / file.relative_to(PACKAGE)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "--target",
                str(stage / "site"),
                str(copy),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PIP_NO_INPUT": "1"},
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"could not install the example plugin for its tests (setuptools >= 77 is "
                f"needed):\n{done.stdout}{done.stderr}"
            )
        try:
            (stage / "site").rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


sys.path.insert(0, str(install_privately()))
