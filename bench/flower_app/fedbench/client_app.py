"""ClientApp for the SuperLink path (each SuperNode runs it)."""

from flwr.client import ClientApp
from flwr.common import Context

from fedbench.common import BenchClient


def client_fn(context: Context):
    return BenchClient().to_client()


app = ClientApp(client_fn=client_fn)
