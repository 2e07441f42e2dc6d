"""The report: built from real probe runs and CKA maps, as Markdown and one self-contained HTML
page; what is missing is named; nothing at all is a clear error."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from analysis.report import build_report, wilson
from extract.store.schema import FeatureKey
from probe.grid import TrainSettings
from probe.run import ProbeConfig, probe
from tests.probe.stores import blobs, make_store

PNG = bytes.fromhex("89504e470d0a1a0a")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.captions, self._in_caption = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_caption = tag == "figcaption"

    def handle_data(self, data):
        if self._in_caption:
            self.captions.append(data)

    def handle_endtag(self, tag):
        self._in_caption = False if tag == "figcaption" else self._in_caption


def _run(tmp_path, name="run1"):
    keys = [FeatureKey(10, 3, 2), FeatureKey(50, 3, 2)]
    x, y, c = blobs(200, 4, 16, seed=0, shape=(4, 2, 2))
    make_store(tmp_path / "tr.zarr", {k: x for k in keys}, y)
    xt, yt, _ = blobs(80, 4, 16, seed=1, shape=(4, 2, 2), centres=c)
    make_store(tmp_path / "te.zarr", {k: xt for k in keys}, yt, split="test")
    return probe(
        ProbeConfig(
            train=tmp_path / "tr.zarr",
            test=tmp_path / "te.zarr",
            results=tmp_path / "results" / "demo",
            training=TrainSettings(epochs=2, batch_size=32),
            progress=False,
            name=name,
        )
    )


def _cka_map(folder, name, kernel):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.png").write_bytes(PNG + name.encode())
    (folder / f"{name}.json").write_text(
        json.dumps(
            {
                "rows": ["a"],
                "cols": ["a"],
                "cka": [[1.0]],
                "images": 50,
                "kernel": kernel,
                "sources": {"A": {"model": "tiny", "store": "/x/te.zarr"}},
            }
        )
    )


def test_the_html_page_embeds_every_figure_and_holds_the_table(tmp_path):
    result = _run(tmp_path)
    _cka_map(tmp_path / "results" / "cka", "blocks", "linear")
    _cka_map(tmp_path / "results" / "cka", "mb", "minibatch")
    md, page, missing = build_report(
        [tmp_path / "results"],
        [tmp_path / "results" / "cka"],
        tmp_path / "rep",
        "t",
        generation=tmp_path / "none.json",
    )
    text = md.read_text()
    assert "| run1 | linear | tiny | random-init |" in text and "![curves_run1](curves_run1.png)" in text
    assert (tmp_path / "rep" / "curves_run1.png").is_file() and (tmp_path / "rep" / "blocks.png").is_file()
    parsed = _Page()
    parsed.feed(page.read_text())
    assert {"table", "h2", "figure", "figcaption", "details"} <= set(parsed.tags)
    # curves + 2 CKA maps, all embedded
    assert len(parsed.images) == 3 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    decoded = [base64.b64decode(src.split(",", 1)[1]) for src in parsed.images]
    # the CKA maps are redrawn from their JSON for the page, not the saved PNG embedded
    assert all(d.startswith(PNG) for d in decoded) and PNG + b"blocks" not in decoded
    assert not re.search(r"src=['\"](?!data:)", page.read_text())  # nothing fetched from elsewhere
    captions = " ".join(parsed.captions)
    assert (
        "Linear CKA over 50 images" in captions and "Minibatch CKA (unbiased HSIC) over 50 images" in captions
    )
    # Markdown code spans become <code>
    assert "<code>te.zarr</code>" in page.read_text() and "`te.zarr`" not in page.read_text()
    lo, hi = wilson(result["test"]["top1"], result["test"]["rows"])
    # the interval, and the run's provenance
    assert f"{lo:.2f}-{hi:.2f}" in page.read_text() and "run1.json" in page.read_text()
    assert missing == [m for m in missing if m.startswith("generation")] and len(missing) == 1


def test_what_is_missing_is_named_and_nothing_at_all_is_an_error(tmp_path):
    _run(tmp_path)
    md, page, missing = build_report(
        [tmp_path / "results"], [tmp_path / "nocka"], tmp_path / "rep", generation=None
    )
    assert any("make cka" in m for m in missing) and any("make demo-gen" in m for m in missing)
    assert "Not in this report" in md.read_text() and "make cka" in page.read_text()
    with pytest.raises(FileNotFoundError, match="nothing to report: probe results: no probe_results.csv"):
        build_report([tmp_path / "empty"], [tmp_path / "nocka"], tmp_path / "rep2")


def test_the_wilson_interval_matches_its_formula():
    lo, hi = wilson(90.0, 100)
    p, n, z = 0.9, 100, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert lo == pytest.approx(100 * (centre - half)) and hi == pytest.approx(100 * (centre + half))
    assert 82.0 < lo < 83.0 and 94.0 < hi < 95.0  # the textbook value: [82.6, 94.5]
