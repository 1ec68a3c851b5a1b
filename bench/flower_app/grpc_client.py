"""Legacy gRPC path, client side: one `flwr.client.start_client` per OS process.

Run by bench/flower_side.py with Flower's venv python; never imported by fedsuite.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flwr.client import start_client  # noqa: E402

from fedbench.common import BenchClient  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    args = ap.parse_args()
    start_client(server_address=args.address, client=BenchClient().to_client(), insecure=True,
                 max_wait_time=120)


if __name__ == "__main__":
    main()
