"""The README's first example runs as written and its printed summary is right: the banana's
mean (1, 2) within 4 MCSE and R-hat < 1.01, with no warning other than a handful of
divergences."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "ChEES()" in code
    printed = []
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "README.md", "exec"), {"print": printed.append})  # noqa: S102
    (table,) = printed
    assert isinstance(table, pd.DataFrame)
    for coord, truth in (("x[0]", 1.0), ("x[1]", 2.0)):
        row = table.loc[coord]
        assert abs(row["mean"] - truth) < 4 * row["mcse_mean"], row
        assert row["r_hat"] < 1.01, row
    assert os.path.isfile(tmp_path / "banana.nc")
    others = [str(w.message) for w in caught if "diverged" not in str(w.message)]
    assert not [m for m in others if "R-hat" in m or "never moved" in m], others
