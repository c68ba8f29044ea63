"""What the market and the VPP domains share: NEM time, the NEM's product names, the battery model,
content hashes, errors and the replay clock (market time against wall-clock time)."""
