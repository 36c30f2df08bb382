"""The report index's paper-vs-ours table: every row says what differs from the paper."""

from __future__ import annotations

import json

from bloodlib.report.index import NO_PAPER_NUMBER, NOT_STATED, render_index


def test_every_summary_row_gets_a_differs_cell(tmp_path):
    summary = [
        {
            "metric": "VGG16-SSD300 mAP@0.5",
            "paper": 0.84,
            "ours": 0.9,
            "note": "n",
            "model": "SSD300, VGG16-BN backbone at width 0.25, from scratch",
            "paper_model": "SSD300-VGG16, ImageNet-pretrained",
            "differs": "width 0.25; <no ImageNet>",
        },
        {"metric": "images/s", "paper": None, "ours": 30.0, "note": "n"},
        {"metric": "accuracy", "paper": 0.5, "ours": 0.6, "note": "n"},
    ]
    (tmp_path / "01_x").mkdir()
    (tmp_path / "01_x" / "metrics.json").write_text(json.dumps({"notebook": "01_x", "summary": summary, "metrics": {}}))
    run = {"status": "ok", "wall_s": 1.0, "finished_at": "now"}
    html = render_index(tmp_path, {"provenance": {"profile": "quick"}, "notebooks": {"01_x": run}})
    assert "<th>differs from the paper in</th>" in html
    assert "width 0.25; &lt;no ImageNet&gt;<br><small>ours: SSD300, VGG16-BN backbone at width 0.25" in html
    assert "<small>paper: SSD300-VGG16, ImageNet-pretrained</small>" in html
    assert f"<td>{NO_PAPER_NUMBER}</td>" in html and f"<td>{NOT_STATED}</td>" in html
    assert '<details class="differs"><summary>width 0.25</summary>width 0.25; &lt;no ImageNet&gt;' in html  # folded
    summary_table = html.split('<table class="summary">', 1)[1].split("</table>", 1)[0]
    assert summary_table.count("<tr><td>") == 3 and summary_table.count("<br><small>") == 2  # one row per summary row
