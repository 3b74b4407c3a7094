"""The shared argument check of the algorithm constructors (``algos._checks.real``)."""

import math

import pytest

from decentjax.algos import _checks


@pytest.mark.parametrize(
    ("value", "bounds", "expected"),
    [
        (0.5, dict(low=0, high=1), 0.5),
        (0, dict(low=0, high=1), 0.0),  # closed ends by default
        (1, dict(low=0, high=1), 1.0),
        (3, dict(low=0, low_open=True), 3.0),
        (-2.5, dict(), -2.5),
    ],
)
def test_accepts_finite_numbers_inside_the_interval(value, bounds, expected):
    out = _checks.real("x", value, **bounds)
    assert out == expected and type(out) is float


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (0, dict(low=0, high=1, low_open=True), r"x must be a number in \(0, 1\], got 0\."),
        (1.0, dict(low=0, high=1, high_open=True), r"x must be a number in \[0, 1\), got 1\.0\."),
        (0.0, dict(low=0, low_open=True), r"x must be a finite number > 0, got 0\.0\."),
        (-1, dict(low=0), r"x must be a finite number >= 0, got -1\."),
        (2, dict(high=1.5, high_open=True), r"x must be a finite number < 1\.5, got 2\."),
        (True, dict(low=0), r"got True\."),  # bool is an int subclass, refused
        (math.inf, dict(low=0), r"got inf\."),
        (math.nan, dict(), r"x must be a finite number, got nan\."),
        ("0.5", dict(low=0, high=1), r"got '0\.5'\."),
        (None, dict(low=0, high=1), r"got None\."),
        (10**400, dict(low=0), r"x must be a finite number >= 0, got 1000"),  # float overflow
    ],
)
def test_refuses_with_the_value_and_the_valid_interval(value, bounds, message):
    with pytest.raises(ValueError, match=message):
        _checks.real("x", value, **bounds)


def test_method_prefix_and_note():
    with pytest.raises(
        ValueError, match=r"^apd: w1 must be a finite number > 0 \(the step\), got 0\.$"
    ):
        _checks.real("w1", 0, low=0, low_open=True, method="apd", note="the step")
