"""Temporal worker processes: the AutoBidder worker (cycle, distribution, operator workflows and their
activities, with the result relay) and the VPP worker (dispatch events, peak shaving, load sampling).

The SQS worker pools that serve forecasts and optimisations are :mod:`pools`.
"""
