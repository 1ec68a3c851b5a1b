"""Horizontal FedAvg: fedsuite beside Flower 1.42, same model size, same clients, one run.

fedsuite runs as it ships: coordinator and parties as separate processes on 127.0.0.1
over mTLS (Flower runs without TLS, as in its own examples: that is in its favour).
Each client/party returns the global model plus N(0, 1e-3) noise; there is no
evaluation. Seconds per round are the median of the steady-state rounds (the first is
dropped; fedsuite's rounds include its per-round checkpoint and SQLite commit); peak
RSS is the coordinator's (Flower: its server's) VmHWM.

    .venv/bin/python bench/horizontal.py                  # 10 x 1 M, and 2/10/50 parties at 1 M for memory
    .venv/bin/python bench/horizontal.py --big            # ... and 10 x 10 M
    .venv/bin/python bench/horizontal.py --no-flower      # fedsuite only
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fedcore.proto import coordinator_pb2 as pb  # noqa: E402

from fedsuite.local import LocalFederation  # noqa: E402

MIB = 1 << 20


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def tiny_dataset(path: Path) -> None:
    """A party needs a dataset to be sampled; the vector model only uses its row count."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "label"])
        writer.writerows([[i / 100, i % 2] for i in range(100)])


def run_fedsuite(n_parties: int, n_params: int, rounds: int = 5, timeout_s: float = 900) -> dict[str, Any]:
    """Seconds per steady-state round and coordinator peak RSS for one configuration."""
    with tempfile.TemporaryDirectory(prefix="fedsuite-bench-") as scratch:
        base = Path(scratch)
        tiny_dataset(base / "tiny.csv")
        names = [f"p{i:03d}" for i in range(n_parties)]
        with LocalFederation(base, startup_timeout_s=180) as federation:
            federation.init_certs(["coordinator", *names])
            coordinator = federation.start_coordinator(party_timeout_s=60)
            dataset = {"bench": {"path": str(base / "tiny.csv"), "label": "label", "eval_fraction": 0}}
            with ThreadPoolExecutor(max_workers=6) as pool:  # 2 cores: start a few at a time
                list(pool.map(lambda name: federation.start_party(name, dataset), names))
            federation.wait_for_parties(names, timeout_s=300)
            spec = pb.JobSpec(name="bench", horizontal=pb.HorizontalJobSpec(
                dataset="bench", model=pb.ModelSpec(type=pb.MODEL_TYPE_VECTOR, vector_size=n_params),
                rounds=rounds, learning_rate=1e-3, min_parties=n_parties, round_timeout_s=timeout_s,
                evaluate_every=0, max_round_retries=0,
            ))
            with federation.admin(timeout_s=60) as admin:
                job_id = admin.submit(spec)
                events = list(admin.watch(job_id, timeout_s))
                job = admin.get(job_id)
            if job.state != pb.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"bench job failed: {job.reason}")
            rss = peak_rss_mb(coordinator.process.pid)
    # A round lasts from one commit to the next: training, aggregation, checkpoint and SQLite commit
    # included (as Flower's configure_fit to configure_fit). The first round, which starts the job, is dropped.
    commits = [e.time for e in events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    seconds = [b - a for a, b in zip(commits, commits[1:])]
    return {"framework": "fedsuite", "clients": n_parties, "params": n_params,
            "seconds_per_round": statistics.median(seconds), "server_peak_rss_mb": round(rss, 1),
            "model_mb": round(n_params * 4 / MIB, 1), "rounds": rounds, "round_seconds": seconds}


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'framework':<18}{'clients':>8}{'params':>12}{'s/round':>10}{'peak RSS MB':>13}{'RSS/model':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        model_mb = r["params"] * 4 / MIB
        lines.append(f"{r['framework']:<18}{r['clients']:>8}{r['params']:>12,}{r['seconds_per_round']:>10.2f}"
                     f"{r['server_peak_rss_mb']:>13.0f}{r['server_peak_rss_mb'] / model_mb:>11.1f}")
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fedsuite's round time and RSS over the faster Flower path's, per configuration."""
    out = []
    for ours in (r for r in rows if r["framework"] == "fedsuite"):
        flowers = [r for r in rows if r["framework"].startswith("flower")
                   and (r["clients"], r["params"]) == (ours["clients"], ours["params"])]
        if flowers:
            fastest = min(flowers, key=lambda r: r["seconds_per_round"])
            out.append({"clients": ours["clients"], "params": ours["params"], "vs": fastest["framework"],
                        "time_ratio": round(ours["seconds_per_round"] / fastest["seconds_per_round"], 3),
                        "rss_ratio": round(ours["server_peak_rss_mb"] / fastest["server_peak_rss_mb"], 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", action="store_true", help="also 10 x 10 M parameters")
    parser.add_argument("--no-flower", action="store_true", help="fedsuite only")
    parser.add_argument("--scaling", default="2,10,50", help="party counts for the memory-flatness run at 1 M")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args()
    configs = [(10, 1_000_000)] + ([(10, 10_000_000)] if args.big else [])
    rows: list[dict[str, Any]] = []
    for clients, params in configs:
        rows.append(run_fedsuite(clients, params))
        if not args.no_flower:
            from flower_side import run_flower

            for path in ("grpc", "superlink"):
                result = run_flower(path, clients, params)
                rows.append({k: result[k] for k in ("framework", "clients", "params", "seconds_per_round",
                                                    "server_peak_rss_mb", "rounds")})
        print(table(rows), flush=True)
    for clients in (int(c) for c in args.scaling.split(",") if c):
        if (clients, 1_000_000) not in configs:
            rows.append(run_fedsuite(clients, 1_000_000))
    print(table(rows))
    report = {"results": rows, "ratios": ratios(rows)}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
