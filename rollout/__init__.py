"""Automated canary analysis: the judgement of each analysis window and the rollout's next step."""
