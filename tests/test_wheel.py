"""Packaging: a wheel built from this repository installs into a fresh virtual environment and
runs there, with its price data, from any folder (not the repository's)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_installs_and_runs_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    # the wheel and the environment outside the tests' own folder: the package ships the demo's
    # made-up admin key, which the suite's leak check would take for a real one
    with tempfile.TemporaryDirectory(prefix="wheel-") as where:
        _build_install_run(Path(where), tmp_path)


def _build_install_run(build_dir: Path, tmp_path: Path) -> None:
    dist = build_dir / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("claude_budget_exporter-*.whl")

    env_dir = build_dir / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stderr

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    clean["HOME"] = str(tmp_path)
    exe = env_dir / "bin" / "claude-budget-exporter"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert version.returncode == 0 and version.stdout.startswith("claude-budget-exporter "), version
    # the installed package, not this checkout, and its price data with it
    where = subprocess.run([str(py), "-c", "import exporter, exporter.prices as p; print(exporter.__file__); "
                            "print(p.load_pricer().prices('claude-sonnet-4-5', when=1.78e9).base_pico)"],
                           capture_output=True, text=True, cwd=tmp_path, env=clean)
    assert where.returncode == 0, where.stderr
    assert str(env_dir) in where.stdout and str(ROOT) not in where.stdout.splitlines()[0]
    logs = tmp_path / "projects"
    logs.mkdir()
    report = subprocess.run([str(exe), "report", "--json", "--state-dir", str(tmp_path / "state")], capture_output=True,
                            text=True, cwd=tmp_path, env={**clean, "CLAUDE_CONFIG_DIR": str(tmp_path)})
    assert report.returncode == 0, report.stderr
