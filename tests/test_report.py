"""Tests for the rendered reports: the HTML checked in headless Chromium (images decode, the
summary table is there), the Markdown's image links, and bad input explained in the text."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

import ebmcmc
from ebmcmc import Trace
from ebmcmc.diagnostics import report
from ebmcmc.kernels import MALA
from ebmcmc.studies import StabilityCriteria, report_stability, stability

ENERGY = lambda x: 0.5 * (x**2).sum(-1)  # noqa: E731

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)

# Appended to a copy of a report: once the page has loaded, write into the DOM what the page
# looked like (a deliberately broken control image proves the check can fail).
_CHECK = """<img class="control" alt="control" src="data:image/png;base64,AAAA">
<script>window.addEventListener("load", () => {
  const imgs = [...document.images].filter(i => i.className !== "control");
  const ctl = document.querySelector("img.control");
  const out = document.createElement("pre");
  out.id = "check-result";
  out.textContent = JSON.stringify({
    images: imgs.map(i => i.complete ? i.naturalWidth : -1),
    control: ctl.complete ? ctl.naturalWidth : -1,
    summary: !!document.querySelector("table#summary"),
    rows: document.querySelectorAll("table#summary tbody tr").length,
  });
  document.body.appendChild(out);
});</script>"""


def _trace(num_chains=4, num_samples=120):
    return ebmcmc.sample(
        ENERGY, MALA(0.8), torch.zeros(num_chains, 2), num_samples, generator=0, progress=False
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report(_trace(), out), out


def _in_chromium(html_path: Path) -> dict:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (CI installs it: apt-get install -y chromium)")
    page = html_path.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>")
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "check.html"
        wrapper.write_text(page, encoding="utf-8")
        cmd = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp}/profile", "--virtual-time-budget=5000",
            "--dump-dom", wrapper.as_uri(),
        ]  # fmt: skip
        try:
            dom = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"chromium could not run here: {err}")
    m = re.search(r'<pre id="check-result">(.*?)</pre>', dom, re.S)
    if m is None:
        pytest.skip("chromium ran but rendered no page (no usable headless mode here)")
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_html_report_renders_in_chromium(rendered, tmp_path):
    html_path, out = rendered
    got = _in_chromium(html_path)
    assert got["control"] == 0  # the broken control image does not decode
    assert len(got["images"]) >= 4 and all(w > 0 for w in got["images"]), got
    assert got["summary"] and got["rows"] == 2
    # and the page paints: a screenshot that is not one flat colour
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path}/profile", "--hide-scrollbars",
        "--window-size=1000,1400", f"--screenshot={shot}", html_path.as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=60)
    assert shot.is_file()
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1400, 1000) and pixels.std() > 0.01


def test_stability_report_renders_in_chromium(tmp_path):
    starts = {
        "data": torch.randn(16, 2, generator=torch.Generator().manual_seed(0)),
        "noise": torch.full((16, 2), 3.0),
    }
    res = stability(
        ENERGY, MALA(0.9), starts, 100, short_run=5, criteria=StabilityCriteria(window=50)
    )
    got = _in_chromium(report_stability(res, tmp_path))
    assert got["control"] == 0
    assert len(got["images"]) == 1 and got["images"][0] > 0
    assert got["summary"]


def test_markdown_image_links_resolve_to_pngs(rendered):
    _, out = rendered
    md = (out / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) >= 4
    for link in links:
        p = out / link
        assert p.is_file(), link
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert "## Summary" in md


def _no_traceback(out: Path) -> str:
    text = (out / "report.md").read_text(encoding="utf-8")
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert "Traceback" not in text and "Traceback" not in html_text
    return text


def test_one_chain_report_explains_missing_r_hat(tmp_path):
    report(_trace(num_chains=1), tmp_path)
    text = _no_traceback(tmp_path)
    assert "R-hat needs at least 2 chains: this trace has 1" in text
    assert "1 chains x 120 draws" in text


def test_nan_draws_report_explains_why_there_is_no_summary(tmp_path):
    tr = _trace()
    x = tr.variables["x"].clone()
    x[1, 7, 0] = math.nan
    bad = Trace({"x": x}, tr.stats, attrs=tr.attrs)
    report(bad, tmp_path)
    text = _no_traceback(tmp_path)
    assert "no summary" in text and "non-finite draws" in text


def test_composed_report_renders_and_links_resolve(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from ebmcmc.diagnostics import Finding, Section, write_report

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "curve.png")
    plt.close(fig)
    table = pd.DataFrame({"kernel": ["MALA", "HMC"], "r_hat": [1.002, 1.05],
                          "ess_bulk": [900.0, 120.0]}, index=["a", "b"])  # fmt: skip
    path = write_report(
        tmp_path, "Composed", [Finding("ok", "fine"), Finding("warning", "hm")],
        notes=["a note"],
        sections=[Section("Table", text="p1\n\np2", table=table),
                  Section("Curve", figure="curve.png")],
    )  # fmt: skip
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "**1.05** ⚠" in md and "**120** ⚠" in md and "| a | MALA |" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / link).is_file()
    page = path.read_text(encoding="utf-8")
    assert '<table id="summary">' in page and "<p>p2</p>" in page
    got = _in_chromium(path)
    assert got["images"] and all(w > 0 for w in got["images"]) and got["rows"] == 2
    with pytest.raises(ValueError, match="missing.png"):
        write_report(tmp_path, "x", sections=[Section("gone", figure="missing.png")])
    with pytest.raises(TypeError, match="Section"):
        write_report(tmp_path, "x", sections=["not a section"])
