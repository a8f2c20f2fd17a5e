"""The encryption passphrase: from a Prefect ``Secret`` block, else ``$DB_BACKUP_PASSPHRASE``.

Read where it is needed (a task, a CLI command) and never passed as a parameter,
returned to a flow, logged or put in a message.
"""

from __future__ import annotations

from typing import Any

from db_backup.crypto import keys
from db_backup.errors import ConfigError, PassphraseRequired


def load_passphrase(secret: str | None, purpose: str = "encryption") -> str:
    """The passphrase from the Secret block ``secret``, else ``$DB_BACKUP_PASSPHRASE``.

    PassphraseRequired when neither is set: encryption never silently turns off.
    """
    if secret:
        from prefect.blocks.system import Secret

        try:
            block: Any = Secret.load(secret)
            value = block.get()
        except ValueError as exc:
            raise ConfigError(f"Secret block {secret!r} does not exist") from exc
        if not isinstance(value, str) or not value:
            raise ConfigError(f"Secret block {secret!r} does not hold a passphrase string")
        return value
    env = keys.passphrase_from_env()
    if env is None:
        raise PassphraseRequired(
            f"{purpose} needs a passphrase: set {keys.PASSPHRASE_ENV} or name a Secret block "
            "(--passphrase-secret / passphrase_secret)"
        )
    return env
