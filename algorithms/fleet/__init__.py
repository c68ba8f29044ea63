"""The virtual power plant's maths: site telemetry, aggregation with uncertainty, allocation of a MW
target to sites, accounting, local site plans, plan aggregation, the fleet bid and peak shaving."""
