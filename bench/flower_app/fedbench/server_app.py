"""ServerApp for the SuperLink path (`flwr run`)."""

from flwr.common import Context
from flwr.server import ServerApp, ServerAppComponents, ServerConfig

from fedbench.common import make_strategy


def server_fn(context: Context) -> ServerAppComponents:
    cfg = context.run_config
    strategy = make_strategy(
        n_clients=int(cfg["n-clients"]),
        n_params=int(cfg["n-params"]),
        timing_file=str(cfg["timing-file"]),
    )
    return ServerAppComponents(
        strategy=strategy, config=ServerConfig(num_rounds=int(cfg["num-server-rounds"]))
    )


app = ServerApp(server_fn=server_fn)
