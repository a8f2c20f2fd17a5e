"""Encryption at rest: the sealed stream format (stream.py) and the passphrase-wrapped
key files with their rotation and pruning of retired keys (keys.py).
"""
