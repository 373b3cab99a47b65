"""The kernel's query discipline: filters in the indexed form, sort keys, strict cursors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.query import (
    InvalidCursor,
    UnindexedFilter,
    ascending_number,
    decode_cursor,
    decode_offset,
    descending_number,
    encode_cursor,
    order_key,
    setting,
    where,
)


def test_equality_on_a_secondary_field_becomes_eq_and_ranges_pass_through() -> None:
    assert where({"status": "active", "created_ms": {"$gte": 5}}, region="kazan") == {
        "status": {"$eq": "active"},
        "created_ms": {"$gte": 5},
        "region": {"$eq": "kazan"},
    }


def test_the_primary_key_keeps_plain_equality_and_in() -> None:
    assert where(_id="m1") == {"_id": "m1"}
    assert where(_id={"$in": ["a", "b"]}) == {"_id": {"$in": ["a", "b"]}}


@pytest.mark.parametrize(
    "bad",
    [
        {"$or": [{"a": 1}, {"b": 2}]},
        {"$and": [{"a": 1}]},
        {"region": {"$in": ["a", "b"]}},
        {"status": {"$ne": "erased"}},
        {"author_id": {"$type": "string"}},
        {"roles": ["coordinator"]},
    ],
)
def test_shapes_that_would_scan_are_refused(bad: dict) -> None:
    with pytest.raises(UnindexedFilter):
        where(bad)


def test_beside_an_id_equality_a_guard_may_use_nin_but_never_ne() -> None:
    assert where({"_id": "m1", "status": {"$nin": ["erased"]}}) == {
        "_id": "m1",
        "status": {"$nin": ["erased"]},
    }
    with pytest.raises(UnindexedFilter):
        where({"_id": "m1", "status": {"$ne": "erased"}})
    with pytest.raises(UnindexedFilter):
        where({"_id": {"$in": ["a"]}, "status": {"$nin": ["erased"]}})


numbers = st.floats(allow_nan=False, allow_infinity=True)


@given(numbers, numbers)
def test_descending_number_keys_sort_in_reverse_numeric_order(a: float, b: float) -> None:
    if a > b:
        assert descending_number(a) < descending_number(b)
        assert ascending_number(a) > ascending_number(b)
    elif a == b:
        assert descending_number(a) == descending_number(b)


def test_zero_and_negative_zero_share_one_key() -> None:
    assert descending_number(0.0) == descending_number(-0.0)
    assert not math.isnan(float(int(descending_number(1.5), 16)))


@given(st.integers(min_value=0, max_value=10**13 - 2), st.text(min_size=1).filter(str.isprintable))
def test_order_keys_sort_by_time_then_id(ms: int, ident: str) -> None:
    assert order_key(ms, ident) < order_key(ms + 1, ident)
    assert order_key(ms, "a") < order_key(ms, "b")


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
    )
)
def test_a_cursor_round_trips(key: str) -> None:
    assert decode_cursor(encode_cursor(key)) == key


@pytest.mark.parametrize("bad", ["", "²:x", "!!!", "9" * 5000, encode_cursor("a b"), "a" * 601])
def test_a_tampered_cursor_is_refused(bad: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(bad)


def test_offset_cursors_are_plain_bounded_digits() -> None:
    assert decode_offset(None) == 0
    assert decode_offset("20") == 20
    for bad in ("-1", "1e3", "9" * 30, "²"):
        with pytest.raises(InvalidCursor):
            decode_offset(bad)


def test_setting_sets_the_fields_and_unsets_only_when_some_are_named():
    assert setting({"a": 1}) == {"$set": {"a": 1}}
    assert setting({"a": 1}, ["b", "c"]) == {"$set": {"a": 1}, "$unset": {"b": "", "c": ""}}
    assert setting({}, iter(["b"])) == {"$set": {}, "$unset": {"b": ""}}
