"""fedcore: the library the three fedsuite services share. Algorithms here never import grpc."""
