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
    .venv/bin/python bench/horizontal.py --repeat 5       # runs per configuration (default 3): median, min-max
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
from fedsuite.translate import duration, unix  # noqa: E402

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
                rounds=rounds, learning_rate=1e-3, min_parties=n_parties, round_timeout=duration(timeout_s),
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
    commits = [unix(e.time) for e in events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    seconds = [b - a for a, b in zip(commits, commits[1:])]
    return {"framework": "fedsuite", "clients": n_parties, "params": n_params,
            "seconds_per_round": statistics.median(seconds), "server_peak_rss_mb": round(rss, 1),
            "model_mb": round(n_params * 4 / MIB, 1), "rounds": rounds, "round_seconds": seconds}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's repeated runs: the median of each figure and its spread (min, max)."""
    out = {k: runs[0][k] for k in ("framework", "clients", "params")}
    for key in ("seconds_per_round", "server_peak_rss_mb"):
        values = [r[key] for r in runs]
        out[key] = statistics.median(values)
        out[f"{key}_spread"] = [min(values), max(values)]
    out["repeats"] = len(runs)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'framework':<18}{'clients':>8}{'params':>12}{'s/round':>10}{'(min-max)':>14}"
            f"{'peak RSS MB':>13}{'(min-max)':>12}{'RSS/model':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        model_mb = r["params"] * 4 / MIB
        t_lo, t_hi = r["seconds_per_round_spread"]
        m_lo, m_hi = r["server_peak_rss_mb_spread"]
        lines.append(f"{r['framework']:<18}{r['clients']:>8}{r['params']:>12,}{r['seconds_per_round']:>10.2f}"
                     f"{f'{t_lo:.2f}-{t_hi:.2f}':>14}{r['server_peak_rss_mb']:>13.0f}{f'{m_lo:.0f}-{m_hi:.0f}':>12}"
                     f"{r['server_peak_rss_mb'] / model_mb:>11.1f}")
    return "\n".join(lines)


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fedsuite over the faster Flower path, run by run (the i-th runs of each ran side by side), as a
    median with its spread: a ratio is only a result when its spread is narrow."""
    out = []
    configs = sorted({(r["clients"], r["params"]) for r in runs if r["framework"] == "fedsuite"})
    for config in configs:
        same = [r for r in runs if (r["clients"], r["params"]) == config]
        ours = [r for r in same if r["framework"] == "fedsuite"]
        flowers = {f: [r for r in same if r["framework"] == f] for f in {r["framework"] for r in same} - {"fedsuite"}}
        if not flowers:
            continue
        fastest = min(flowers, key=lambda f: statistics.median(r["seconds_per_round"] for r in flowers[f]))
        pairs = list(zip(ours, flowers[fastest]))
        time_ratios = [a["seconds_per_round"] / b["seconds_per_round"] for a, b in pairs]
        rss_ratios = [a["server_peak_rss_mb"] / b["server_peak_rss_mb"] for a, b in pairs]
        out.append({"clients": config[0], "params": config[1], "vs": fastest, "pairs": len(pairs),
                    "time_ratio": round(statistics.median(time_ratios), 3),
                    "time_ratio_spread": [round(min(time_ratios), 3), round(max(time_ratios), 3)],
                    "rss_ratio": round(statistics.median(rss_ratios), 3),
                    "rss_ratio_spread": [round(min(rss_ratios), 3), round(max(rss_ratios), 3)]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", action="store_true", help="also 10 x 10 M parameters")
    parser.add_argument("--no-flower", action="store_true", help="fedsuite only")
    parser.add_argument("--scaling", default="2,10,50", help="party counts for the memory-flatness run at 1 M")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each configuration (median and spread)")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args()
    configs = [(10, 1_000_000)] + ([(10, 10_000_000)] if args.big else [])
    runs: list[dict[str, Any]] = []
    for clients, params in configs:
        for _ in range(args.repeat):  # side by side: each repeat runs every framework once, so noise hits all
            runs.append(run_fedsuite(clients, params))
            if not args.no_flower:
                from flower_side import run_flower

                for path in ("grpc", "superlink"):
                    result = run_flower(path, clients, params)
                    runs.append({k: result[k] for k in ("framework", "clients", "params", "seconds_per_round",
                                                        "server_peak_rss_mb", "rounds")})
    for clients in (int(c) for c in args.scaling.split(",") if c):
        if (clients, 1_000_000) not in configs:
            runs.extend(run_fedsuite(clients, 1_000_000) for _ in range(args.repeat))
    keys = list(dict.fromkeys((r["framework"], r["clients"], r["params"]) for r in runs))
    rows = [summarise([r for r in runs if (r["framework"], r["clients"], r["params"]) == key]) for key in keys]
    print(table(rows))
    report = {"results": rows, "ratios": ratios(runs), "runs": runs}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
