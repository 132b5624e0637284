"""Airbourne's load scenario and its yardsticks; run from the repository, not installed."""
