"""The scheduler's pure core (run by services/scheduler/loop.py)."""
