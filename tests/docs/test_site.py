"""The documentation site builds with MkDocs in strict mode (every warning is an error).

Strict mode fails on a broken link between pages, a nav entry without its page, a
mkdocstrings reference to an object that does not exist, and a docstring griffe cannot
parse, so this test guards the docs of every module the API pages name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from transferkit.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    for page in ("", "getting-started/", "run-directory/", "examples/", "guides/fine-tuning/"):
        assert (site / page / "index.html").is_file(), page
    for name in METHODS.names():
        html = (site / "methods" / name / "index.html").read_text(encoding="utf-8")
        assert "Parameters" in html and "Measured results" in html, name
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "transferkit run [OPTIONS] CONFIG" in cli
    dann = (site / "methods" / "dann" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in dann  # the docstring's .. math:: became display math
    assert "name: dann-digits-to-mnist5k" in dann  # the example YAML is included
    api = (site / "api" / "experiment" / "index.html").read_text(encoding="utf-8")
    assert "load_config" in api and "Result" in api
