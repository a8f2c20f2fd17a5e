"""MySQL/MariaDB: the logical method via mysqldump/mariadb-dump (logical.py) and the
stream filter that picks tables at restore (filter.py); physical.py would go beside them.
"""
