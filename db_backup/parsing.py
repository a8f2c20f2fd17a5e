"""One parser per idea: durations, time zones, block references, secrets in URLs.

Every entry point (CLI, flow parameter, fleet file) calls these, so a value is
accepted or refused the same way wherever it is typed. Errors are
:class:`~db_backup.errors.ConfigError` with one line naming the value and the cause.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta, tzinfo
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from db_backup.errors import ConfigError

# --- durations -------------------------------------------------------------

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Retention windows count in whole hours (the prune report prints ``36h``/``7d``).
RETENTION_UNITS = "hdw"
#: Alert windows and grace periods may be given in seconds or minutes too.
WINDOW_UNITS = "smhd"
_TERM_RE = re.compile(r"(\d+)([a-z])")


def parse_duration(text: str, units: str = "smhdw") -> timedelta:
    """``36h``, ``90m``, ``7d``, ``2w`` or a sum like ``1w3d``, in the allowed ``units``.

    The one duration grammar: whole numbers, each followed by a unit letter
    (case and surrounding spaces ignored). Zero, a bare number, a fraction or a
    unit not in ``units`` is refused with ConfigError.
    """
    clean = text.strip().lower()
    terms = _TERM_RE.findall(clean)
    total = sum(int(n) * UNIT_SECONDS.get(u, 0) for n, u in terms)
    if not clean or _TERM_RE.sub("", clean) or any(u not in units for _, u in terms) or not total:
        examples = {"hdw": "36h, 7d, 2w or 1w3d", "smhd": "90m, 26h or 2d"}
        hint = examples.get(units, "90m, 36h, 7d or 1w3d")
        raise ConfigError(f"duration {text!r} is invalid (use e.g. {hint})")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """A whole-hour duration as ``7d`` / ``36h`` (the inverse of :func:`parse_duration`)."""
    hours = int(value.total_seconds() // 3600)
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


# --- time zones ------------------------------------------------------------


def parse_timezone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``UTC`` in any case); ConfigError when it is unknown."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"time zone {name!r} is unknown (use an IANA name such as Europe/Paris)"
        ) from exc


# --- block references ------------------------------------------------------

_BLOCK_PART_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def block_reference(ref: str, kinds: tuple[str, ...] | None = None) -> tuple[str, str] | None:
    """``(slug, name)`` when ``ref`` is a block reference ``slug/name``, else None.

    ``kinds`` limits the block type slugs (``("sqlite-database", ...)``) or, as
    suffixes starting with ``-``, their endings (``("-database",)``). URLs and
    paths with more than one ``/`` are never block references.
    """
    if "://" in ref or ref.count("/") != 1:
        return None
    slug, name = ref.split("/")
    if not slug or not name:
        return None
    if kinds is not None and not any(
        slug.endswith(k) if k.startswith("-") else slug == k for k in kinds
    ):
        return None
    return slug, name


def is_database_block(ref: str) -> bool:
    """Whether ``ref`` names a database block (``postgres-database/orders``)."""
    return block_reference(ref, ("-database",)) is not None


def check_block_name(name: str) -> str:
    """A block name the server accepts (a-z, 0-9, '-'); ValueError otherwise."""
    if not _BLOCK_PART_RE.match(name):
        raise ValueError(f"block name {name!r} is invalid (a-z, 0-9, '-')")
    return name


# --- secrets in URLs -------------------------------------------------------

#: Query parameters that carry a credential (Azure SAS signatures included).
_SECRET_QUERY_RE = re.compile(r"password|passwd|^pwd$|secret|token|^sig$|signature", re.I)
_USERINFO_RE = re.compile(r"(//[^/@:?#]*):.*@")
#: ``user:secret@`` even where the secret holds a ``/`` that moves urlsplit's host part.
_RAW_PASSWORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^@?#:]*:[^@?#]*@")
_QUERY_VALUE_RE = re.compile(r"([?&;][^=&;#]*=)[^&;#]*")


def mask_url(url: str) -> str:
    """``url`` with every password and query value replaced by ``***`` (parsable or not)."""
    masked = _USERINFO_RE.sub(r"\1:***@", url)
    return _QUERY_VALUE_RE.sub(lambda m: m.group(1) + "***", masked)


DATABASE_HINT = (
    "set DB_BACKUP_PG_PASSWORD, DB_BACKUP_MYSQL_PASSWORD or DB_BACKUP_MONGO_PASSWORD, "
    "or use a database block"
)
STORAGE_HINT = "use a storage block, or the cloud SDK's own environment variables"


def refuse_url_secrets(value: str, what: str = "database URL", hint: str = DATABASE_HINT) -> None:
    """ConfigError when ``value`` is a URL carrying a secret, or one that cannot be parsed.

    The one place every engine, store and entry point asks before a flow run
    records ``value``: a password in the user part, a secret in the query
    (``?password=``, ``?sig=``...) and a URL that cannot be parsed are all
    refused, and the one-line message shows the URL masked, never the secret.
    Paths and block references (no ``://``) pass.
    """
    cause = url_secret_problem(value)
    if cause is None:
        return
    masked = mask_url(value)
    consequence = "it would be stored in flow parameters and logs"
    if cause == PASSWORD:
        raise ConfigError(f"a password in the {what} {masked} is refused: {consequence}; {hint}")
    raise ConfigError(f"the {what} {masked} {cause} and is refused: {consequence}; {hint}")


PASSWORD = "holds a password"


def url_secret_problem(value: str) -> str | None:
    """Why the URL ``value`` may not be recorded (``"holds a password"``...), or None."""
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return "cannot be parsed (so a password in it could not be kept out)"
    if parts.password is not None or _RAW_PASSWORD_RE.match(value):
        return PASSWORD
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY_RE.search(key):
            return f"holds a secret in its query ({key}=)"
    return None
