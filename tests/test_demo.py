"""The README's main job, ``ebmcmc demo``, at smoke size: one report with every part."""

from __future__ import annotations

import json
import re

import pytest

from ebmcmc.app.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--smoke", "--no-progress", "--out", str(out)]) == 0
    return out


def test_demo_report_has_every_part(demo_dir):
    md = (demo_dir / "report.md").read_text(encoding="utf-8")
    # the summary table with R-hat and ESS
    assert "| r_hat |" in md
    assert "ess_bulk" in md
    # AIS log Z with its standard error
    assert re.search(r"AIS log Z = -?\d+\.\d+ ± \d+\.\d+", md)
    # the long-run curve and the DRL figures, as PNGs that exist
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "long-run/stability_curves.png" in links and "drl-samples.png" in links
    for link in links:
        assert (demo_dir / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (demo_dir / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == len(links)
    assert '<table id="summary">' in html
    # the banana's and the long run's own reports and the figures behind the report
    assert (demo_dir / "banana-hmc" / "report.html").is_file()
    assert (demo_dir / "long-run" / "report.html").is_file()
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert {"kl", "ais_log_z", "ais_log_z_se", "log_z_quadrature", "stable"} <= set(metrics)


def test_demo_bad_output_path_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["demo", "--smoke", "--no-progress", "--out", str(blocker / "x")]) == 1
    assert "ebmcmc demo: error" in capsys.readouterr().err
