"""The core's one config reader: typed, bounded getters that name the full key, the value and what is allowed."""

from __future__ import annotations

import math

import pytest

from aiprod.aiprod_core.config_reader import REQUIRED, ConfigSection, check_ints


def _error(read) -> str:
    with pytest.raises(ValueError) as caught:
        read()
    return str(caught.value)


def test_nested_sections_name_the_full_key():
    root = ConfigSection({"vocoder": {"bwe": {"n_fft": 65536, "hop": 80}}})
    bwe = root.section("vocoder").section("bwe")
    assert bwe.integer("hop", high=8192) == 80
    assert _error(lambda: bwe.integer("n_fft", high=8192)) == "vocoder.bwe.n_fft=65536, expected 'an int in [1, 8192]'"
    assert root.section("absent").integer("x", 7) == 7  # an absent section reads as empty, defaults unchecked


@pytest.mark.parametrize("value", [5, [1, 2], "text", 1.5])
def test_a_section_that_is_not_a_dict_is_refused(value):
    assert _error(lambda: ConfigSection({"transformer": value}).section("transformer")) == (
        f"transformer={value!r}, expected 'a dict'")
    assert _error(lambda: ConfigSection(value)) == f"config={value!r}, expected 'a dict'"


@pytest.mark.parametrize(("value", "ok"), [(3, True), (0, False), (-1, False), (True, False), (2.0, False),
                                           ("3", False), (None, False), (10**9, False)])
def test_integer_types_and_bounds(value, ok):
    section = ConfigSection({"n": value})
    if ok:
        assert section.integer("n", high=64) == value
    else:
        assert _error(lambda: section.integer("n", high=64)) == f"n={value!r}, expected 'an int in [1, 64]'"


def test_required_and_default():
    section = ConfigSection({})
    assert _error(lambda: section.integer("n", REQUIRED)) == "n=None, expected 'a positive int'"
    assert section.integer("n", 4) == 4
    assert _error(lambda: section.flag("f")) == "f=None, expected 'a bool'"


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0.0, True, "1e-6"])
def test_number_must_be_finite_and_in_bounds(value):
    section = ConfigSection({"eps": value})
    assert _error(lambda: section.number("eps", above=0.0, high=1.0)) == (
        f"eps={value!r}, expected 'a finite number > 0.0 <= 1.0'")
    assert ConfigSection({"eps": 1}).number("eps", above=0.0, high=1.0) == 1.0


def test_flags_choices_and_pinned_values_do_not_confuse_bools_and_ints():
    section = ConfigSection({"f": 1, "c": True, "p": 1, "q": 0})
    assert _error(lambda: section.flag("f")) == "f=1, expected 'a bool'"
    assert _error(lambda: section.choice("c", 1, (1, 2))) == "c=True, expected (1, 2)"
    assert _error(lambda: section.pinned("p", True)) == "p=1, expected True"
    section.pinned("q", 0.0)  # 0 == 0.0: a JSON int where the reference writes a float is fine
    section.pinned("absent", 3, absent=3)
    assert _error(lambda: section.pinned("absent", True)) == "absent=None, expected True"


def test_integer_lists():
    section = ConfigSection({"rates": [6, 5, 2], "bad": [6, "5"], "long": list(range(1, 100))})
    assert section.integers("rates", high=64) == (6, 5, 2)
    assert _error(lambda: section.integers("rates", length=2)) == "rates=[6, 5, 2], expected 'a list of 2 ints >= 1'"
    assert "bad=[6, '5']" in _error(lambda: section.integers("bad"))
    assert "expected 'a list of 1 to 64 ints >= 1'" in _error(lambda: section.integers("long"))
    assert section.integers("empty", (), min_length=0) == ()
    assert check_ints("k[0]", [1, 3, 5], high=8) == (1, 3, 5)
    assert _error(lambda: section.sequence("rates", max_length=2)) == (
        "rates=[6, 5, 2], expected 'a list of 0 to 2 items'")
