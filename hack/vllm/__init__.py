"""Real vLLM (CPU build) for checks: cached install and tiny model (setup), server processes (server)."""
