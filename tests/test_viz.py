"""Plot helpers: the curves show exactly the logged values."""
import json

import matplotlib
import numpy as np

matplotlib.use("Agg")

from dhlib import viz  # noqa: E402


def test_running_mean_matches_a_loop():
    values = np.random.default_rng(0).normal(size=57)
    window = 10
    expected = [values[max(0, k - window + 1):k + 1].mean() for k in range(len(values))]
    np.testing.assert_allclose(viz.running_mean(values, window), expected, rtol=1e-12)


def test_training_curves_draw_every_logged_term(tmp_path):
    log = tmp_path / "train_log.jsonl"
    records = []
    for step in range(1, 41):
        r = {"step": step, "L_d": 2.0 / step, "L_x": 1.0, "L_cla": 0.5, "loss": 2.0 / step + 0.2}
        if step % 2 == 0:  # flow terms exist on flow steps only
            r |= {"L_mle": 4.0, "L_jsd": 0.3}
        records.append(r)
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert viz.read_training_log(log) == records
    fig = viz.training_curves(log, window=5)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split()[0] for ax in titled] == ["total", "L_d", "L_x", "L_cla", "L_mle", "L_jsd"]
    raw = titled[1].lines[0]
    np.testing.assert_allclose(raw.get_ydata(), [2.0 / s for s in range(1, 41)])
    assert len(titled[4].lines[0].get_xdata()) == 20
    without_flow = viz.training_curves([{k: v for k, v in r.items() if k not in ("L_mle", "L_jsd")}
                                        for r in records])
    assert len([ax for ax in without_flow.axes if ax.get_title()]) == 4
