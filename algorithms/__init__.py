"""Pure, typed business logic of the platform: no I/O, no configuration reads, no clocks.

Every function here takes its inputs as arguments and returns its outputs, so it can be unit-tested
without a server and replayed bit for bit by the backtester.
"""
