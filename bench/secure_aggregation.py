"""Secure aggregation's price: seconds per round of horizontal FedAvg with Paillier beside plaintext, one run.

The demo's job (breast cancer, logistic regression, 31 parameters, three parties as processes over mTLS),
run three times on one federation: plaintext, then `secure_aggregation: paillier` at 1024 and 2048 bits.

    .venv/bin/python bench/secure_aggregation.py [--rounds 30] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import PARTIES, horizontal_job, prepare_horizontal_data
from fedsuite.local import LocalFederation

MODES = [("plaintext", pb.SECURE_AGGREGATION_NONE, 0), ("paillier-1024", pb.SECURE_AGGREGATION_PAILLIER, 1024),
         ("paillier-2048", pb.SECURE_AGGREGATION_PAILLIER, 2048)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedsuite-secure-") as scratch, LocalFederation(Path(scratch)) as fed:
        fed.init_certs(["coordinator", "arbiter", *PARTIES])
        fed.start_arbiter()
        fed.start_coordinator()
        prepare_horizontal_data(Path(scratch) / "data")
        for party in PARTIES:
            fed.start_party(party, {"breast": {"path": f"data/{party}-train.csv", "eval_path": f"data/{party}-eval.csv",
                                               "label": "target"}})
        fed.wait_for_parties(list(PARTIES))
        with fed.admin(60) as admin:
            for name, mode, bits in MODES:
                spec = horizontal_job(args.rounds)
                spec.horizontal.secure_aggregation, spec.horizontal.key_bits = mode, bits
                started = time.monotonic()
                job = admin.wait(admin.submit(spec), 1800)
                if job.state != pb.JOB_STATE_SUCCEEDED:
                    raise RuntimeError(f"{name}: {job.reason}")
                rows.append({"mode": name, "seconds_per_round": (time.monotonic() - started) / args.rounds,
                             "test_auc": job.rounds[-1].eval.auc})
    base = rows[0]["seconds_per_round"]
    print(f"{'mode':<16}{'s/round':>10}{'x plaintext':>13}{'AUC':>8}")
    for row in rows:
        row["ratio"] = row["seconds_per_round"] / base
        print(f"{row['mode']:<16}{row['seconds_per_round']:>10.3f}{row['ratio']:>13.1f}{row['test_auc']:>8.4f}")
    report = {"rounds": args.rounds, "parties": len(PARTIES), "results": rows}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
