"""SQLite: the backup method of today, a consistent snapshot through the online backup API
(logical.py). A second backup method for this engine would sit beside it as physical.py.
"""
