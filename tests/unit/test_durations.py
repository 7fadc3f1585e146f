"""Durations: one bounded grammar; parsing raises ValueError and nothing else."""

from __future__ import annotations

import datetime
import re

import hypothesis
import hypothesis.strategies as st
import pytest

from gpu_rightsizer.models import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("90s", 90),
        ("5ms", 0.005),
        ("1h30m", 5400),
        ("24h", 86400),
        ("7d", 604800),
        ("2w", 1209600),
        ("3650d", 3650 * 86400),
        ("315360000s", 3650 * 86400),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert durations.parse(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999d", "longer than the maximum of 3650d"),
        ("3651d", "longer than the maximum of 3650d"),
        ("522w", "longer than the maximum of 3650d"),
        ("3650d1ms", "longer than the maximum of 3650d"),
        ("9" * 400 + "w", "at most 32 characters"),
        ("1 day", "use a number and a unit"),
        ("", "use a number and a unit"),
        ("24", "use a number and a unit"),
        ("-1h", "use a number and a unit"),
    ],
)
def test_parse_rejects_with_a_clear_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        durations.parse(text)


@hypothesis.given(
    st.one_of(
        st.text(max_size=40),
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=10**30),
                st.sampled_from(["ms", "s", "m", "h", "d", "w"]),
            ),
            min_size=1,
            max_size=5,
        ).map(lambda parts: "".join(f"{n}{u}" for n, u in parts)),
    )
)
def test_parse_never_raises_anything_but_value_error(text: str) -> None:
    try:
        value = durations.parse(text)
    except ValueError:
        return
    assert datetime.timedelta(0) <= value <= datetime.timedelta(days=durations.MAX_DAYS)


@hypothesis.given(st.integers(min_value=0, max_value=durations.MAX_DAYS * 86400))
def test_what_format_seconds_writes_fits_the_pattern_and_parses_back(seconds: int) -> None:
    text = durations.format_seconds(seconds)
    assert re.fullmatch(durations.PATTERN, text)
    assert len(text) <= durations.MAX_LENGTH
    assert durations.parse(text).total_seconds() == seconds


def test_the_pattern_bounds_every_number_to_what_the_maximum_needs() -> None:
    assert re.fullmatch(durations.PATTERN, "3650d")
    assert re.fullmatch(durations.PATTERN, "1w2d3h4m5s6ms")
    assert not re.fullmatch(durations.PATTERN, "99999999999d")
    assert not re.fullmatch(durations.PATTERN, "10000d")
    assert not re.fullmatch(durations.PATTERN, "1000w")
    assert not re.fullmatch(durations.PATTERN, "9999999999s")
