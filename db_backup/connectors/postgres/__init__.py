"""PostgreSQL: the logical method via pg_dump/pg_restore (logical.py) and its archive
table-of-contents filter (toc.py); a physical method would go beside them as physical.py.
"""
