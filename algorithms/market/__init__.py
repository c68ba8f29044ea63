"""Trading one unit in the NEM: as-of market snapshots, price forecasts, the dispatch optimisation,
bid building and validation, the bid decision, clearing and settlement (all pure functions)."""
