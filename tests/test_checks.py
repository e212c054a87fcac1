"""The shared argument checks: what they accept, what they return, and their messages."""

import numpy as np
import pytest

from npconvnet import checks


@pytest.mark.parametrize("bounds,value,message", [
    ({"at_least": 0}, -1, "x: lr must be a finite number >= 0, got -1"),
    ({"greater_than": 0}, 0, "x: lr must be a finite number > 0, got 0"),
    ({"at_most": 1}, 2.5, "x: lr must be a finite number <= 1, got 2.5"),
    ({"less_than": 1}, 1, "x: lr must be a finite number < 1, got 1"),
    ({"at_least": 0, "less_than": 1}, 1.0, r"x: lr must be a finite number in \[0, 1\), got 1.0"),
    ({"greater_than": 0, "less_than": 1}, 0.0, r"x: lr must be a finite number in \(0, 1\), got 0.0"),
    ({"at_least": 0, "at_most": 1}, -0.5, r"x: lr must be a finite number in \[0, 1\], got -0.5"),
    ({}, float("inf"), "x: lr must be a finite number, got inf"),
    ({"at_least": 0}, np.float64("nan"), "x: lr must be a finite number >= 0, got nan"),
])
def test_a_number_out_of_range_raises_a_value_error_stating_the_range(bounds, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        checks.number("x", "lr", value, **bounds)


@pytest.mark.parametrize("value", ["0.1", True, np.bool_(False), None, [0.1], 1j, np.array(0.1)])
def test_what_is_not_a_real_number_raises_a_type_error_naming_its_type(value):
    with pytest.raises(TypeError, match=rf"^x: lr must be a finite number >= 0, got .* \({type(value).__name__}\)$"):
        checks.number("x", "lr", value, at_least=0)


@pytest.mark.parametrize("value", [3, np.int32(3), np.float32(3.0), 3.0])
def test_a_number_comes_back_as_a_python_float(value):
    result = checks.number("x", "lr", value, at_least=0)
    assert type(result) is float and result == 3.0


def test_an_infinite_number_passes_only_when_allowed_and_nan_never():
    assert checks.number("x", "best", -np.inf, finite=False) == -np.inf
    with pytest.raises(ValueError, match="^x: best must be a number, got nan$"):
        checks.number("x", "best", np.nan, finite=False)


def test_integers_are_python_or_numpy_ints_and_come_back_as_python_ints():
    assert type(checks.integer("x", "patience", np.int64(4), at_least=0)) is int
    with pytest.raises(ValueError, match="^x: patience must be an int >= 0, got -1$"):
        checks.integer("x", "patience", -1, at_least=0)
    with pytest.raises(ValueError, match=r"^x: patience must be an int in \[1, 5\], got 6$"):
        checks.integer("x", "patience", 6, at_least=1, at_most=5)


@pytest.mark.parametrize("value", [2.0, True, "2", None])
def test_what_is_not_an_int_raises_a_type_error(value):
    with pytest.raises(TypeError, match="^x: patience must be an int >= 0, got "):
        checks.integer("x", "patience", value, at_least=0)


@pytest.mark.parametrize("value", [1, 0, "no", None, "False"])
def test_a_boolean_must_be_true_or_false(value):
    with pytest.raises(TypeError, match="^x: nesterov must be True or False, got "):
        checks.boolean("x", "nesterov", value)


def test_a_numpy_bool_comes_back_as_a_python_bool():
    assert checks.boolean("x", "nesterov", np.bool_(True)) is True


def test_one_of_lists_the_choices():
    assert checks.one_of("x", "mode", "max", ("min", "max")) == "max"
    with pytest.raises(ValueError, match="^x: mode must be one of 'min', 'max', got 'maximum'$"):
        checks.one_of("x", "mode", "maximum", ("min", "max"))


def test_a_sequence_has_its_length_and_is_a_tuple_or_list():
    assert checks.sequence("x", "betas", [0.9, 0.99], 2) == (0.9, 0.99)
    with pytest.raises(ValueError, match=r"^x: betas must be a tuple of 2 values, got \(0.9,\)$"):
        checks.sequence("x", "betas", (0.9,), 2)
    with pytest.raises(TypeError, match=r"^x: betas must be a tuple of 2 values, got 0.9 \(float\)$"):
        checks.sequence("x", "betas", 0.9, 2)


def test_two_bounds_on_one_side_are_a_programming_error_told_when_the_message_is_built():
    with pytest.raises(TypeError, match="at most one lower bound"):
        checks.number("x", "lr", -1, at_least=0, greater_than=0)
