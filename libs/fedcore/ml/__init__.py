"""Models as lists of ndarrays, local trainers, aggregators and metrics."""
