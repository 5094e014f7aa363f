"""Scorers: rank candidates in [0, 1], higher is better."""
