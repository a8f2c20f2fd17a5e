"""What a user installing the package relies on: the extras they read about exist, and
`all` (the container image installs `.[all]`) really brings every engine and store."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALIASES = {"s3": "aws", "gcs": "gcp"}


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["optional-dependencies"])


def _readme_extras() -> set[str]:
    """Extras named in the first column of the README's Install table."""
    install = (ROOT / "README.md").read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)`", install, flags=re.MULTILINE))


def test_every_user_extra_is_documented_in_the_readme_and_nothing_else() -> None:
    """Guards README drift: an extra added to pyproject without a line in Install, or a
    documented extra pip would reject ("does not provide the extra")."""
    user_extras = set(_extras()) - {"test"} - set(ALIASES)
    assert _readme_extras() == user_extras


def test_all_extra_brings_every_engine_and_store_extra() -> None:
    """Guards the image: it installs `.[all]`, so an extra left out of `all` is an engine or
    store that fails inside the container (as postgres and mysql once did)."""
    extras = _extras()
    (all_spec,) = extras["all"]
    included = set(re.fullmatch(r"db-backup\[([a-z0-9,-]+)\]", all_spec).group(1).split(","))  # type: ignore[union-attr]
    assert included == set(extras) - {"all", "test"} - set(ALIASES)
    for alias, target in ALIASES.items():
        assert extras[alias] == [f"db-backup[{target}]"]


def test_dockerfile_installs_the_all_extra() -> None:
    """Guards the image against a hand-picked extras list that forgets an engine."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'pip install [^\n]*-e "\.\[all\]"', dockerfile)
