"""Secrets and local state stay out of git: the repository's .gitignore, and `fedsuite certs init`'s warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What the README's walk-through and the services' defaults write (relative paths resolve from
# the config file's directory: examples/ in the walk-through, the working directory without one).
WRITTEN_BY_USERS = [
    "examples/certs/ca.key", "examples/certs/party-a.pem", "certs/ca.key", "somewhere/else/ca.key",
    "examples/state/coordinator.db", "state/checkpoints/j/round-000001.npz", "state/audit.log",
    "examples/party-state/models/m.npz", "party-state/models/m.npz",
    "examples/data/bank.csv", "data/party-a-train.csv",
    "examples/arbiter-audit.log", "arbiter-audit.log", "arbiter-audit.log.head",
]


# Without the caller's GIT_* variables, so git answers about the directories the tests name.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, env=ENV)


@pytest.mark.parametrize("path", WRITTEN_BY_USERS)
def test_gitignore_covers_keys_state_data_and_audit_logs(path: str) -> None:
    checked = git("check-ignore", "--no-index", "--verbose", path, cwd=ROOT)
    assert checked.returncode == 0, f"{path} is not ignored: {checked.stderr}"
    assert checked.stdout.startswith(".gitignore:")


def test_gitignore_ignores_nothing_the_project_ships() -> None:
    tracked_but_ignored = git("ls-files", "--cached", "--ignored", "--exclude-standard", cwd=ROOT)
    assert tracked_but_ignored.returncode == 0, tracked_but_ignored.stderr
    assert tracked_but_ignored.stdout == ""
    shipped = ["libs/fedcore/data.py", "services/party/datasets.py", "examples/party-a.yaml", "libs/fedcore/audit.py"]
    assert git("check-ignore", "--no-index", *shipped, cwd=ROOT).returncode == 1


def certs_init(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedsuite.cli", "certs", "init", str(directory), "--node", "coordinator"],
                          capture_output=True, text=True, timeout=60, env=ENV)


def test_certs_init_warns_when_the_ca_key_could_be_committed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert git("init", "--quiet", str(repo), cwd=tmp_path).returncode == 0
    made = certs_init(repo / "examples" / "certs")
    assert made.returncode == 0, made.stderr
    key = repo.resolve() / "examples" / "certs" / "ca.key"
    assert key.is_file()
    warning = made.stderr.strip()
    assert warning.startswith(f"fedsuite: warning: {key} (the CA's private key")
    assert f"inside the git work tree {repo.resolve()}" in warning and "add" in warning and ".gitignore" in warning
    assert warning.count("\n") == 0 and "Traceback" not in made.stderr

    (repo / ".gitignore").write_text("/examples/certs/\n")
    again = certs_init(repo / "examples" / "certs")
    assert again.returncode == 0 and again.stderr == ""


def test_certs_init_is_quiet_outside_a_git_work_tree(tmp_path: Path) -> None:
    assert git("rev-parse", "--is-inside-work-tree", cwd=tmp_path).returncode != 0
    made = certs_init(tmp_path / "certs")
    assert made.returncode == 0 and made.stderr == ""
    assert (tmp_path / "certs" / "ca.key").is_file()
