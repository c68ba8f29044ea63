"""Fleet simulator: the stand-in for real homes (vectorised numpy), and its gRPC client."""
