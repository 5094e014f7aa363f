"""Pickers: choose the primary endpoint and fallbacks from the total scores."""
