"""Prefect flows of db-backup: backup, restore and verify (prune and drill join later).

Parameters are block references and plain values so they read well in
``prefect.yaml``, the UI's run form and ``prefect deployment run --param``.
"""
