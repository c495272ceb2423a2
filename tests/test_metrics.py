"""Success-rate statistics used by every evaluation report."""

import pytest

from vla.eval.metrics import EpisodeResult, summarize, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)


def test_summarize_counts_outcomes_and_lengths():
    eps = [
        EpisodeResult(0, 0, True, 80, "success"),
        EpisodeResult(1, 1, False, 500, "time_out"),
        EpisodeResult(2, 0, True, 100, "success"),
        EpisodeResult(3, 1, False, 40, "cube_dropping"),
    ]
    s = summarize(eps, task="Lift-Cube")
    assert s["task"] == "Lift-Cube"
    assert s["num_episodes"] == 4 and s["num_success"] == 2 and s["success_rate"] == 0.5
    assert s["mean_episode_length"] == 180 and s["mean_success_length"] == 90
    assert s["outcomes"] == {"success": 2, "time_out": 1, "cube_dropping": 1}
    assert s["success_ci95"][0] < 0.5 < s["success_ci95"][1]
