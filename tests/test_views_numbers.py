"""Honest numbers: an accuracy carries its n, and below 30 examples its 95% interval and a warning."""

import pytest

from builder.interfaces.views import bars_svg, improve_chart_html, wilson_interval


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = wilson_interval(0.5, 4)
    assert lo == pytest.approx(0.150, abs=0.002) and hi == pytest.approx(0.850, abs=0.002)
    lo, hi = wilson_interval(1.0, 4)
    assert lo == pytest.approx(0.510, abs=0.002) and hi == 1.0
    assert wilson_interval(0.9, 1000)[1] - wilson_interval(0.9, 1000)[0] < 0.04


def test_a_small_sample_shows_intervals_and_a_warning():
    svg = bars_svg([("before", 0.5), ("after", 1.0)], "accuracy", n=4)
    assert "(n=4)" in svg and "[15%-85%]" in svg and "[51%-100%]" in svg
    assert "cannot show a gain" in svg and svg.count("class='vf-ci'") == 2
    big = bars_svg([("before", 0.5), ("after", 1.0)], "accuracy", n=200)
    assert "(n=200)" in big and "[" not in big and "cannot show a gain" not in big
    assert "n=" not in bars_svg([("a", 0.5)], "accuracy")  # counts, not accuracies: no n given


def test_the_improve_chart_names_its_n():
    report = {"before": {"accuracy": 0.5}, "rounds": [{"round": 1, "eval": {"accuracy": 1.0}}], "eval_examples": 2}
    html = improve_chart_html(report)
    assert "(n=2)" in html and "cannot show a gain" in html
