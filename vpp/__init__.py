"""Generated protobuf code of the vpp.v1 contracts (do not edit)."""
