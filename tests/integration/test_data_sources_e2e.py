"""Real party processes holding the same rows as CSV, as Parquet and as a SQLite query train the same model
(horizontal, and vertical with ids), and a party whose Parquet or SQL dataset is bad exits at start with one
sentence naming the dataset, as for CSV."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import GUEST, HOST, PARTIES, VERTICAL_PARAMS, prepare_vertical_data
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from tests.conftest import breast_dataset
from tests.integration.test_predict_cli import fedsuite
from tests.integration.test_processes_e2e import job
from tests.integration.test_tls_startup import START_S, assert_one_sentence, party_config, run, tls_section
from tests.tables import as_eval, read_csv_values, write_table


def breast_tables(breast_dir: Path, directory: Path, party: str) -> dict[str, dict[str, Any]]:
    """The party's demo rows as its three datasets: breast (the CSVs), breast_parquet and breast_sql."""
    train = write_table(directory, f"{party}-train", *read_csv_values(breast_dir / f"{party}-train.csv", "target"))
    held = write_table(directory, f"{party}-eval", *read_csv_values(breast_dir / f"{party}-eval.csv", "target"))
    return {"breast": breast_dataset(breast_dir, party),
            **{f"breast_{fmt}": {**train[fmt], **as_eval(held[fmt]), "label": "target"} for fmt in ("parquet", "sql")}}


def test_csv_parquet_and_sqlite_datasets_train_the_same_model(federation: LocalFederation, breast_dir: Path,
                                                              tmp_path: Path) -> None:
    federation.start_coordinator()
    for party in PARTIES:
        federation.start_party(party, breast_tables(breast_dir, tmp_path / party, party))
    federation.wait_for_parties(list(PARTIES))
    results = {}
    with federation.admin() as admin:
        declared = {d.name: (d.n_rows, d.n_eval_rows, d.n_features) for d in admin.parties()[0].datasets}
        assert declared["breast"] == declared["breast_parquet"] == declared["breast_sql"], declared
        for dataset in ("breast", "breast_parquet", "breast_sql"):
            spec = job(rounds=3)
            spec.horizontal.dataset = dataset
            finished = admin.wait(admin.submit(spec), 120)
            assert finished.state == pb.JOB_STATE_SUCCEEDED, finished.reason
            results[dataset] = (finished, admin.download_model(finished.job_id))
    csv_job, csv_model = results["breast"]
    for dataset in ("breast_parquet", "breast_sql"):
        other_job, other_model = results[dataset]
        # the parties' statistics are sums over identical arrays: equal to the last bit
        assert list(other_model.info.feature_mean) == list(csv_model.info.feature_mean), dataset
        assert list(other_model.info.feature_scale) == list(csv_model.info.feature_scale), dataset
        # FedAvg adds the updates in float32 in the order they arrive, so the models agree to float32 rounding
        for a, b in zip(other_model.weights, csv_model.weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=dataset)
        assert [r.eval.accuracy for r in other_job.rounds] == [r.eval.accuracy for r in csv_job.rounds], dataset
        np.testing.assert_allclose([r.eval.loss for r in other_job.rounds], [r.eval.loss for r in csv_job.rounds],
                                   rtol=1e-5, err_msg=dataset)


def bad_datasets(directory: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Dataset keys that cannot load, and the sentence the party must print for each."""
    header = ["id", "age", "target"]
    good = write_table(directory, "good", header, [["a", 1.0, 0], ["b", 2.0, 1]])
    text = write_table(directory, "text", header, [["a", 1.0, 0], ["b", "old", 1]])
    nan = write_table(directory, "nan", header, [["a", float("nan"), 0], ["b", 2.0, 1]])
    label = write_table(directory, "label", header, [["a", 1.0, 0], ["b", 2.0, 0.5]])
    (directory / "junk.parquet").write_bytes(b"not parquet")
    db = good["sql"]["url"]
    return {
        "csv text feature": ({**text["csv"], "label": "target", "id_column": "id"},
                             f"{text['csv']['path']} line 3, column 'age': 'old' is not a finite number"),
        "parquet missing column": ({**good["parquet"], "label": "outcome"},
                                   f"{good['parquet']['path']}: label column 'outcome' not found in header"),
        "parquet text feature": ({**text["parquet"], "label": "target", "id_column": "id"},
                                 f"{text['parquet']['path']} row 2, column 'age': 'old' is not a finite number"),
        "parquet nan": ({**nan["parquet"], "label": "target", "id_column": "id"},
                        f"{nan['parquet']['path']} row 1, column 'age': nan is not a finite number"),
        "sql bad label": ({**label["sql"], "label": "target", "id_column": "id"},
                          f"query on {db} row 2, label column 'target': 0.5 is not a non-negative integer"),
        "unreadable parquet": ({"path": str(directory / "junk.parquet")},
                               f"{directory / 'junk.parquet'} is not a readable Parquet file: "),
        "bad url": ({"url": "sqlite//nowhere", "query": "SELECT 1"}, "url 'sqlite//nowhere' is not a SQLAlchemy URL"),
        "failing query": ({"url": db, "query": "SELECT * FROM patients"},
                          f"query on {db} failed: no such table: patients"),
    }


@pytest.mark.parametrize("case", ["csv text feature", "parquet missing column", "parquet text feature", "parquet nan", "sql bad label",
                                  "unreadable parquet", "bad url", "failing query"])
def test_a_bad_parquet_or_sql_dataset_ends_the_party_at_start_with_one_sentence(pki: Path, tmp_path: Path,
                                                                                 case: str) -> None:
    keys, sentence = bad_datasets(tmp_path / "data")[case]
    tls = tls_section(pki / "ca.pem", pki / "party-a.pem", pki / "party-a.key")
    started = time.monotonic()
    code, output, _ = run("party", party_config("party-a", "127.0.0.1:1", tls, datasets={"records": keys}), tmp_path)
    assert code == 2 and time.monotonic() - started < START_S
    assert_one_sentence(output, f"fedsuite: dataset 'records': {sentence}")


def test_a_vertical_job_reads_its_guest_from_sql_and_its_host_from_parquet_as_from_csv(
    federation: LocalFederation, tmp_path: Path,
) -> None:
    """Ids (strings, in each side's own order) and labels through PSI and training: the same intersection as the CSVs;
    the split model has no ONNX download, and says so as `.npz` does."""
    expected = prepare_vertical_data(tmp_path / "csv")
    tables = {name: write_table(tmp_path / "tables", name, *read_csv_values(tmp_path / "csv" / f"{name}.csv",
                                                                            "target" if name == GUEST else None, "id"))
              for name in (GUEST, HOST)}
    common = {"id_column": "id", "eval_fraction": 0}
    federation.start_arbiter()
    federation.start_coordinator()
    federation.start_party(GUEST, {"csv": {"path": str(tmp_path / "csv" / f"{GUEST}.csv"), "label": "target", **common},
                                   "db": {**tables[GUEST]["sql"], "label": "target", **common}})
    federation.start_party(HOST, {"csv": {"path": str(tmp_path / "csv" / f"{HOST}.csv"), **common},
                                  "db": {**tables[HOST]["parquet"], **common}}, role="host")
    federation.wait_for_parties([GUEST, HOST])
    results = {}
    with federation.admin() as admin:
        for source in ("csv", "db"):
            spec = parse_job_spec({"vertical": {"guest": GUEST, "hosts": [HOST], "guest_dataset": source,
                                                "host_dataset": source, "params": {**VERTICAL_PARAMS, "max_iter": 3}}})
            results[source] = admin.wait(admin.submit(spec), 120)
            assert results[source].state == pb.JOB_STATE_SUCCEEDED, results[source].reason
    by_csv, by_db = (results[s].vertical_result for s in ("csv", "db"))
    assert by_db.intersection == by_csv.intersection == expected["intersection"] and by_db.epochs == by_csv.epochs
    # PSI aligns the rows in an order of its own each run, so mini-batches (and the last digits) differ run to run,
    # CSV against CSV too: both learn, and as well
    assert by_csv.metrics["auc"] > 0.95 and by_db.metrics["auc"] == pytest.approx(by_csv.metrics["auc"], abs=0.02)
    refused = fedsuite(federation, "job", "download", results["db"].job_id, str(tmp_path / "m.onnx"), "--format", "onnx")
    assert refused.returncode == 1 and "trained a split model that no single node holds" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()
