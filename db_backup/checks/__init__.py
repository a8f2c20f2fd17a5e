"""Checks on backups: the check records stored beside a backup (records.py) and the
restore drill that proves a backup restores (drill.py).
"""
