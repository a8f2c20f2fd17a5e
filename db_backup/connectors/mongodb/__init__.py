"""MongoDB: the logical method (logical.py), the dump tar-stream and BSON checks (archive.py)
and the server-free half of a restore (restore.py); physical.py would go beside logical.py.
"""
