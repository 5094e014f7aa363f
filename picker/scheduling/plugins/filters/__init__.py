"""Filters: keep the endpoints a request may go to."""
