"""Storage backends behind one small interface (see :mod:`db_backup.storage.base`).

:func:`open_storage` turns a location into an adapter: a local path or
``file://`` URL, and (when their SDKs are installed) ``s3://``, ``gs://`` and
``az://`` URLs whose credentials and endpoints come from each SDK's standard
environment variables.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from db_backup.errors import ConfigError
from db_backup.storage.base import ObjectInfo, Storage, UploadReceipt, join_key
from db_backup.storage.local import LocalStorage

__all__ = [
    "ObjectInfo",
    "Storage",
    "LocalStorage",
    "UploadReceipt",
    "join_key",
    "open_storage",
    "SCHEMES",
]

# scheme -> "module:function(url) -> Storage"
SCHEMES: dict[str, str] = {
    "s3": "db_backup.storage.s3:open_s3_url",
    "gs": "db_backup.storage.gcs:open_gcs_url",
    "az": "db_backup.storage.azure:open_azure_url",
}


def open_storage(location: str | Path) -> Storage:
    """An adapter for a path or storage URL; ConfigError when it cannot be parsed."""
    text = str(location).strip()
    if not text:
        raise ConfigError("storage location is empty")
    if "://" not in text:
        return LocalStorage(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return LocalStorage(text.split("://", 1)[1])
    target = SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(["a local path", "file://", *(f"{s}://" for s in sorted(SCHEMES))])
        raise ConfigError(f"storage URL {text!r} has unknown scheme {scheme!r} (use {known})")
    module_name, func = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"storage URL {text!r} needs an optional dependency that is not installed: {exc.name}"
        ) from exc
    storage: Storage = getattr(module, func)(text)
    return storage
