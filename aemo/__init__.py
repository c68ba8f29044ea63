"""AEMO's market data as AEMO publishes it: MMS tables (C/I/D CSV files, zips) read into the platform's
array structures, kept apart from the market model (the adapter between NEMWEB and the platform)."""
