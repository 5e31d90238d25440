"""Curve landmarks: where a per-layer curve changes most (steepest step, half change, half value,
inflection), reported beside every shape test across layers as descriptions, not tests."""

from __future__ import annotations

import numpy as np
import pytest

from geoscreen.combine import combine, curve_landmarks
from geoscreen.result import LayerResult

# The published screen's iter_0006/H03 curve (h03_er_curvature.csv in
# github.com/Biodyn-AI/topology-biomechinterp1): the named genes' energy effective rank over its
# 12 layers.  The loop read the fastest compression at layer 1, the inflection (second
# difference changing sign) at layer 3 and the half-life (50% of layer 0) at layer 4.
LOOP_ER = [7.8918, 5.4049, 4.4357, 4.0783, 3.3007, 3.0202, 2.7727, 2.5133, 2.2651, 1.8137,
           1.4205, 1.2789]


def test_the_loops_landmarks_are_read_from_its_own_curve():
    names = [f"L{i}" for i in range(12)]
    out = curve_landmarks(names, list(range(12)), LOOP_ER, "less")
    assert out["steepest_step"]["to"] == "L1"
    assert out["steepest_step"]["change"] == pytest.approx(LOOP_ER[1] - LOOP_ER[0])
    assert out["inflection_layer"] == "L3"
    assert out["half_value_layer"] == "L4"
    # half of the 6.61 fall from L0 to L11 (3.31) is covered by L2 (7.89 - 4.44 = 3.46)
    assert out["half_change_layer"] == "L2"
    assert out["descriptive"] is True


def test_direction_order_and_curves_without_a_landmark():
    names = ["a", "b", "c", "d", "e"]
    rise = [0.0, 0.1, 0.9, 1.0, 1.05]
    up = curve_landmarks(names, [0, 1, 2, 3, 4], rise, "greater")
    assert up["steepest_step"] == {"from": "b", "to": "c", "change": pytest.approx(0.8),
                                   "slope": pytest.approx(0.8)}
    assert up["half_change_layer"] == "c" and up["half_value_layer"] is None
    # a fall is the steepest step only for 'less' or 'two-sided'
    dip = [1.0, 1.2, 0.2, 0.3, 0.4]
    assert curve_landmarks(names, range(5), dip, "greater")["steepest_step"]["to"] == "b"
    assert curve_landmarks(names, range(5), dip, "less")["steepest_step"]["to"] == "c"
    assert curve_landmarks(names, range(5), dip, "two-sided")["steepest_step"]["to"] == "c"
    # layers given out of depth order are read in depth order
    shuffled = curve_landmarks(names[::-1], [4, 3, 2, 1, 0], rise[::-1], "greater")
    assert shuffled["steepest_step"] == up["steepest_step"]
    # a straight line: no inflection, its half change at the middle; a flat one: none
    line = curve_landmarks(names, range(5), [4.0, 3.0, 2.0, 1.0, 0.0], "less")
    assert line["inflection_layer"] is None and line["half_change_layer"] == "c"
    assert line["half_value_layer"] == "c"
    flat = curve_landmarks(names, range(5), [1.0] * 5, "two-sided")
    assert flat["half_change_layer"] is None and flat["inflection_layer"] is None
    assert curve_landmarks(names, range(5), [1.0, np.nan, 2.0, 3.0, 4.0], "greater") == \
        {"descriptive": True}


def test_uneven_layers_are_read_as_slopes():
    """A straight line on layers 0, 1, 5, 6, 12: every slope equal (the widest gap is not the
    steepest), no inflection; a bend at layer 5 of the same layers is found there."""
    names = ["L0", "L1", "L5", "L6", "L12"]
    depth = [0, 1, 5, 6, 12]
    line = curve_landmarks(names, depth, [2.0 - 0.5 * x for x in depth], "less")
    assert line["inflection_layer"] is None
    assert line["steepest_step"]["slope"] == pytest.approx(-0.5)
    assert line["steepest_step"]["to"] == "L1"  # ties: the first
    bend = [0.0, 1.0, 5.0, 5.1, 5.7]  # slope 1 up to layer 5, then 0.1
    out = curve_landmarks(names, depth, bend, "greater")
    assert out["steepest_step"]["to"] in ("L1", "L5") and out["steepest_step"]["slope"] == 1.0
    wiggle = [0.0, 1.0, 5.0, 5.1, 9.0]  # slows, then speeds up again: one inflection at L6
    assert curve_landmarks(names, depth, wiggle, "greater")["inflection_layer"] == "L6"


@pytest.mark.parametrize("across", ["trend", "changepoint", "slope_change"])
def test_every_shape_test_reports_them(across):
    layers = [LayerResult(layer=f"L{i}", layer_index=i, statistic_name="s", statistic=v,
                          effect_name="z", effect_size=v, p_value=None)
              for i, v in enumerate(LOOP_ER)]
    out = combine(layers, across, "less", seed=0)
    lm = out.detail["landmarks"]
    assert lm["steepest_step"]["to"] == "L1" and lm["half_value_layer"] == "L4"
    assert lm["inflection_layer"] == "L3"
