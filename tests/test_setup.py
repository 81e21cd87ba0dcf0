"""`make setup`'s system packages on a bare Debian and on a system without dpkg (fake tools on PATH)."""

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # runs make: not for mutation runs (mutants/ holds no Makefile)

REPO = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")


def system_packages(bin_dir: Path) -> subprocess.CompletedProcess:
    """`make system-packages` with only ``bin_dir`` on PATH (the recipe's shell is /bin/sh)."""
    return subprocess.run([MAKE, "-s", "system-packages"], cwd=REPO, env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=60)


def fake(bin_dir: Path, name: str, script: str) -> None:
    (bin_dir / name).write_text("#!/bin/sh\n" + script)
    (bin_dir / name).chmod(0o755)


def test_a_bare_debian_gets_the_build_packages_it_lacks(tmp_path):
    calls = tmp_path / "apt-calls"
    fake(tmp_path, "id", "echo 0\n")  # root: no sudo
    fake(tmp_path, "grep", 'exec /bin/grep "$@"\n')
    # installed: everything but the compiler, the Python headers and venv, and the dataset
    fake(tmp_path, "dpkg-query", 'case "$3" in build-essential|python3-dev|python3-venv|dataset-fashion-mnist) '
                                 'exit 1;; *) echo "install ok installed";; esac\n')
    fake(tmp_path, "apt-get", f'echo "$@" >> {calls}\n')
    proc = system_packages(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "installing Debian packages: build-essential python3-dev python3-venv dataset-fashion-mnist" in proc.stdout
    assert calls.read_text().splitlines() == [
        "update -qq", "install -y -qq --no-install-recommends build-essential python3-dev python3-venv "
                      "dataset-fashion-mnist"]


def test_a_system_without_dpkg_is_told_what_to_install_in_one_sentence(tmp_path):
    proc = system_packages(tmp_path)  # nothing on PATH: no dpkg-query, no apt-get, no id
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("not a Debian system, so make installs no system packages")
    assert "OpenCV" in lines[0] and "On a cluster without root" in lines[0]
    assert proc.stderr == ""
