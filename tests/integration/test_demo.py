"""The README's run command: `fedsuite demo --report FILE` end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_trains_both_jobs_within_tolerance_and_writes_the_report(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "fedsuite.cli", "demo", "--report", str(report_path), "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, env={"COLUMNS": "120", "PATH": str(Path(sys.executable).parent)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    h, v = report["horizontal"], report["vertical"]
    assert abs(h["auc"] - h["centralized_auc"]) <= 0.01
    assert {"auc", "accuracy", "centralized_auc", "centralized_accuracy", "rounds", "seconds"} <= set(h)
    assert h["rounds"] == 30 and h["party_positive_share"]["party-c"] > 0.8  # one party is label-skewed
    assert abs(v["auc"] - v["centralized_auc"]) <= 0.005
    assert {"auc", "centralized_auc", "intersection", "epochs", "seconds"} <= set(v)
    assert v["intersection"] == v["expected_intersection"] == 529
    # the training job's own evaluation is the predict job's on the same rows; the guest kept a score per id
    assert abs(v["train_auc"] - v["auc"]) <= 1e-9 and abs(v["train_ks"] - v["ks"]) <= 1e-9
    assert v["scores_rows"] == 529
    assert report["ok"] is True and "all checks passed" in done.stdout
    assert report["modes"] == ["horizontal", "vertical", "resilience"]
    r = report["resilience"]
    assert r["checks"] == {"refused_at_submit": True, "restarted_party_used_at_once": True,
                           "quorum_loss_failed_fast": True, "resumed_without_losing_or_repeating_rounds": True}
    assert r["refusal"]["code"] == "FAILED_PRECONDITION" and "braest" in r["refusal"]["message"]
    assert r["quorum_loss"]["seconds_to_fail"] < 30 and "party-c" in r["quorum_loss"]["reason"]
    assert r["resume"]["committed_rounds"] == list(range(1, 13))
    # every node ran as its own process, over mTLS, and logged JSON lines
    logs = sorted(p.name for p in (tmp_path / "run" / "logs").iterdir())
    assert logs == sorted(f"{n}.log" for n in ("coordinator", "arbiter", "party-a", "party-b", "party-c", "bank", "telecom"))
    assert all((tmp_path / "run" / "certs" / f"{n}.pem").exists() for n in ("coordinator", "bank", "telecom"))
