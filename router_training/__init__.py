"""Fitting routers and confidence calibrators from logged outcomes.

:mod:`router_training.logs` reads the outcome store into flat, JSON-plain rows
(one per attempt, joined with its request), the input every fitter builds on.
"""
