"""The committed protobuf code in libs/fedcore/proto is what scripts/gen_protos.py makes of protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "libs" / "fedcore" / "proto"
STALE = "generated protobuf code is stale: run `make protos`"


def _files(directory: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file below ``directory``, bytecode caches aside."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "proto"
    run = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode == 0, f"gen_protos.py failed:\n{run.stdout}\n{run.stderr}"
    fresh, committed = _files(out), _files(COMMITTED)
    assert "tensor_pb2.py" in fresh and "__init__.py" in fresh  # the generator did write something
    missing = sorted(fresh.keys() - committed.keys())
    extra = sorted(committed.keys() - fresh.keys())
    differing = sorted(name for name in fresh.keys() & committed.keys() if fresh[name] != committed[name])
    assert not (missing or extra or differing), (
        f"{STALE} (missing: {missing}, extra: {extra}, differing: {differing})"
    )
