"""Legacy gRPC path, server side: `flwr.server.start_server` with the timed FedAvg.

Run by bench/flower_side.py with Flower's venv python; never imported by fedsuite.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flwr.server import ServerConfig, start_server  # noqa: E402

from fedbench.common import make_strategy, vm_hwm_kb  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--n-clients", type=int, required=True)
    ap.add_argument("--n-params", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--timing-file", required=True)
    args = ap.parse_args()
    strategy = make_strategy(args.n_clients, args.n_params, args.timing_file)
    start_server(
        server_address=args.address,
        config=ServerConfig(num_rounds=args.rounds),
        strategy=strategy,
    )
    with open(args.timing_file, "a", encoding="utf-8") as fh:
        rec = {"event": "server_done", "t": time.monotonic(), "pid": os.getpid(),
               "vm_hwm_kb": vm_hwm_kb()}
        fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
