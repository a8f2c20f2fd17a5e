"""Retention: the pure policy that picks which backups to keep (policy.py) and the
prune that plans and deletes the rest together with their orphans (prune.py).
"""
