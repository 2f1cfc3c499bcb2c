"""Report pages from templates (autoescaped data, no markup built in Python) and learned
metrics scored in the report as callables that the model's command passes in."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from analysis import rendering
from analysis.__main__ import main as analysis_main
from tests.analysis.an_helpers import save_untrained_metric


def test_page_escapes_every_value_and_embeds_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "curve.png")
    fig.savefig(tmp_path / "curve.pdf")
    plt.close(fig)
    df = pd.DataFrame(
        {
            "worker": ["<script>alert(1)</script>", "mturk:A&B"],
            "lapse_rate": [1e-8, 0.25],
            "jnd_level_ci_high": [np.inf, 40.0],
            "lr_pvalue": [1e-9, 0.2],
        }
    )
    sections = [
        rendering.section(
            "Workers <b>",
            note="rates & notes",
            figures=[rendering.figure(tmp_path / "curve.png", "a <curve>")],
            blocks=[
                rendering.bullets(["x < y"]),
                rendering.heading("More"),
                rendering.table(df),
                rendering.table(df, max_rows=1),
                rendering.table(pd.DataFrame()),
            ],
        )
    ]
    page = rendering.render_page("t", "sub", sections, ["careful <now>"], ["a.csv"])
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "mturk:A&amp;B" in page and "Workers &lt;b&gt;" in page and "careful &lt;now&gt;" in page
    assert "<li>x &lt; y</li>" in page and "<h3>More</h3>" in page and "(empty)" in page
    assert "1 more rows in the CSV." in page
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    # a 1e-8 rate in fixed decimals, an open interval end, a p-value below 0.001
    assert cells[:4] == ["&lt;script&gt;alert(1)&lt;/script&gt;", "0.000", "open", "&lt; 0.001"]
    assert 'src="data:image/png;base64,' in page and '<a href="curve.pdf">PDF</a>' in page
    assert 'alt="a &lt;curve&gt;"' in page


def test_analysis_report_refuses_metric_and_names_the_model_command(filled_db, tmp_path, capsys):
    assert (
        analysis_main(["report", "--db", filled_db, "--out", str(tmp_path / "r"), "--metric", "dpam", "--no-progress"])
        == 1
    )
    assert "python -m model report" in capsys.readouterr().err
    assert not (tmp_path / "r" / "index.html").exists()


def test_model_report_scores_a_learned_metric_beside_the_baselines(filled_db, tmp_path, capsys):
    pytest.importorskip("torch")
    from model.__main__ import main as model_main

    save_untrained_metric(tmp_path / "m.pt")
    out = tmp_path / "report"
    assert (
        model_main(
            [
                "report",
                "--db",
                filled_db,
                "--out",
                str(out),
                "--baselines",
                "l1",
                "--n-boot",
                "0",
                "--dpam",
                "none",
                "--no-progress",
                "--metric",
                str(tmp_path / "m.pt"),
            ]
        )
        == 0
    )
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    agree = pd.read_csv(out / "agreement.csv")
    assert list(agree["metric"]) == ["l1", "learned:m.pt"]
    assert agree["n_pairs"].iloc[1] == agree["n_pairs"].iloc[0] > 0
    assert "learned:m.pt" in (out / "index.html").read_text()
