"""``db-backup apply`` refusals that need no server, run in this process (coverage sees them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from db_backup.cli import app

runner = CliRunner()

FLEET = """\
version: 1
defaults:
  timezone: Europe/Berlín
  storage: local-file-system/backups
databases:
  shop:
    type: sqlite
    path: /srv/shop.db
    schedul: "30 2 * * *"
"""


def test_apply_refuses_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    fleet = tmp_path / "jobs.yaml"
    fleet.write_text(FLEET)
    # also when a session-wide test harness has set an API URL in Prefect's settings
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        res = runner.invoke(app, ["apply", str(fleet)])
    assert res.exit_code == 1
    assert "apply needs a Prefect server: set PREFECT_API_URL" in res.output


def test_apply_lists_every_problem_with_its_line_before_contacting_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a port nothing listens on: the file is refused before any request is made
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    fleet = tmp_path / "jobs.yaml"
    fleet.write_text(FLEET)
    res = runner.invoke(app, ["apply", str(fleet), "--dry-run"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert lines == [
        f"error: {fleet}:3: defaults.timezone: unknown time zone 'Europe/Berlín' "
        "(use an IANA name like Europe/Berlin)",
        f"error: {fleet}:6: databases.shop.schedule: missing required key 'schedule'",
        f"error: {fleet}:9: databases.shop.schedul: unknown key 'schedul' (check the spelling)",
        "error: 3 problem(s) in the fleet file; nothing was changed",
    ]


def test_apply_names_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    res = runner.invoke(app, ["apply", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert "error: cannot read fleet file" in res.output and "nope.yaml" in res.output
