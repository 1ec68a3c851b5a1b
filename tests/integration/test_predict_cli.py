"""`fedsuite job download` then `fedsuite predict`: a horizontal model trained by real processes over mTLS
scores a CSV on the user's machine, one score per id, equal to the model's own computation."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from fedcore.data import DatasetConfig, load_dataset
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import PARTIES, horizontal_job
from fedsuite.local import LocalFederation
from tests.conftest import breast_dataset


def fedsuite(federation: LocalFederation, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, in its own process."""
    client = ["--coordinator", federation.coordinator_address, "--certs", str(federation.certs)] if args[0] == "job" else []
    command = [sys.executable, "-m", "fedsuite.cli", *args[:2], *client, *args[2:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": str(Path(sys.executable).parent)})


def test_predict_scores_each_id_as_the_downloaded_model_computes_it(
    federation: LocalFederation, breast_dir: Path, tmp_path: Path,
) -> None:
    federation.start_coordinator()
    for party in PARTIES[:2]:
        federation.start_party(party, {"breast": breast_dataset(breast_dir, party)})
    federation.wait_for_parties(list(PARTIES[:2]))
    spec = horizontal_job(3)
    spec.horizontal.min_parties = 2
    with federation.admin() as admin:
        job = admin.wait(admin.submit(spec), 120)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
    saved = fedsuite(federation, "job", "download", job.job_id, str(tmp_path / "model.npz"))
    assert saved.returncode == 0, saved.stderr

    # a party's held-out CSV, given an id column as a party's datasets may have
    source = breast_dir / "party-c-eval.csv"
    with open(source, newline="") as handle:
        header, *body = list(csv.reader(handle))
    rows = tmp_path / "rows.csv"
    with open(rows, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *header])
        writer.writerows([f"customer-{n}", *row] for n, row in enumerate(body))
    scored = fedsuite(federation, "predict", "--model", str(tmp_path / "model.npz"), "--data", str(rows),
                      "--out", str(tmp_path / "scores.csv"), "--label", "target")
    assert scored.returncode == 0, scored.stderr
    assert f"{len(body)} rows scored" in scored.stdout

    # the expected scores, from the .npz's tensors and scaling with numpy alone
    with np.load(tmp_path / "model.npz") as archive:
        kernel, bias = archive["w0"].astype(np.float64), archive["w1"].astype(np.float64)
        info = json.loads(str(archive["info"]))
        assert sorted(archive.files) == ["info", "w0", "w1"] and info["round"] == 3
    data = load_dataset("eval", DatasetConfig(path=str(source), label="target", eval_fraction=0))
    mean, scale = np.asarray(info["feature_mean"]), np.asarray(info["feature_scale"])
    expected = 1.0 / (1.0 + np.exp(-(((data.X - mean) / scale) @ kernel + bias)[:, 0]))
    with open(tmp_path / "scores.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == ["id", "score", "label"]
    assert [r["id"] for r in written] == [f"customer-{n}" for n in range(len(body))]
    np.testing.assert_allclose([float(r["score"]) for r in written], expected, rtol=1e-12)
    assert [int(r["label"]) for r in written] == data.y.tolist()  # type: ignore[union-attr]

    # a CSV whose columns do not fit the model: one sentence, no traceback, nothing written
    refused = fedsuite(federation, "predict", "--model", str(tmp_path / "model.npz"), "--data", str(rows),
                       "--out", str(tmp_path / "refused.csv"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "31 feature columns" in refused.stderr and "--label" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused.csv").exists()
