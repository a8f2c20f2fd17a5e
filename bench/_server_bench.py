"""Shared parts of bench_postgres.py and bench_mariadb.py.

Every variant runs under /usr/bin/time, which reports the wall time and the
peak RSS of the largest process in the tree (the dump tool, zstd or Python),
so the figures compare like with like. Variants are interleaved run by run,
so load from other work on the machine hits them alike.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB of the largest process) of ``cmd``; raises on failure."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", out.name, *cmd],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        rss = int(out.read().strip().splitlines()[-1])
    return wall, rss


def flow_seconds(store: Path) -> float:
    """The backup's own time from its manifest (dump start to manifest), without CLI start-up."""
    manifest = json.loads(next(store.rglob("manifest.json")).read_text())
    from datetime import datetime

    start = datetime.fromisoformat(manifest["started_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(manifest["finished_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def _consistency(store: Path) -> str:
    """The manifest's consistency note (says whether row counts were exact)."""
    manifest = json.loads(next(store.rglob("manifest.json")).read_text())
    return str(manifest["consistency"])


def compare(url: str, plain_shell: str, runs: int, level: int, work: Path) -> dict[str, object]:
    """Run the plain pipeline, db-backup's in-process pipeline and the CLI, ``runs`` times each."""
    results: dict[str, list[tuple[float, int]]] = {"plain": [], "direct": [], "cli": []}
    flow: list[float] = []
    sizes: dict[str, int] = {}
    consistency: list[str] = []
    env = {"DB_BACKUP_STAGING": str(work / "staging")}
    for i in range(runs):
        out = work / "plain.zst"
        results["plain"].append(
            timed(["bash", "-o", "pipefail", "-c", plain_shell.format(out=out)])
        )
        sizes["plain"] = out.stat().st_size
        out.unlink()
        store = work / f"direct-{i}"
        results["direct"].append(
            timed(
                [
                    sys.executable,
                    str(Path(__file__).with_name("_direct.py")),
                    url,
                    str(store),
                    str(level),
                ],
                env,
            )
        )
        sizes["direct"] = sum(p.stat().st_size for p in store.rglob("*.zst"))
        consistency.append(_consistency(store))
        shutil.rmtree(store)
        store = work / f"cli-{i}"
        results["cli"].append(
            timed(
                [
                    str(VENV_BIN / "db-backup"),
                    "backup",
                    "--url",
                    url,
                    "--storage",
                    str(store),
                    "--level",
                    str(level),
                    "--name",
                    "bench",
                ],
                env,
            )
        )
        flow.append(flow_seconds(store))
        consistency.append(_consistency(store))
        shutil.rmtree(store)
    plain = statistics.median(w for w, _ in results["plain"])
    report: dict[str, object] = {"runs": runs, "zstd_level": level}
    for name, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        report[name] = {
            "wall_s": round(wall, 2),
            "ratio_vs_plain": round(wall / plain, 3),
            "peak_rss_mib": round(max(r for _, r in rows) / 1024, 1),
            "all_wall_s": [round(w, 2) for w, _ in rows],
        }
    fl = statistics.median(flow)
    report["cli_flow_own"] = {"wall_s": round(fl, 2), "ratio_vs_plain": round(fl / plain, 3)}
    report["stored_bytes"] = sizes
    report["consistency"] = sorted(set(consistency))
    return report


def print_report(title: str, report: dict[str, object]) -> None:
    print(f"== {title}")
    print(json.dumps(report, indent=2))
    for name in ("plain", "direct", "cli", "cli_flow_own"):
        row = report[name]
        assert isinstance(row, dict)
        rss = f", peak RSS {row['peak_rss_mib']} MiB" if "peak_rss_mib" in row else ""
        print(f"{name:>13}: {row['wall_s']:7.2f} s  ratio {row['ratio_vs_plain']:.3f}x{rss}")
