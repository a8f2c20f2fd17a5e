"""Prefect flows of db-backup: backup, restore, verify, prune and drill.

Parameters are block references and plain values so they read well in
``prefect.yaml``, the UI's run form and ``prefect deployment run --param``.
"""
