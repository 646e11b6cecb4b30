"""The orchestrator's pure core (run by services/orchestrator/loop.py)."""
