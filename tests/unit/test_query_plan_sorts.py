"""The query-plan test's sort check (tests/query_plans.py) on recorded explain output: a sorted,
limited query passes only when the index the plan uses serves its order."""

from __future__ import annotations

from tests.query_plans import equality_fields, sort_problem_on_mongodb, sort_problem_on_nx

# Recorded on nx-27017 0.8.1 from the new-promising segment before its rank key: the filter,
# the sort and the plan of one weekly cohort's page (bench/burst.py --store prints them).
COHORT_FILTER = {
    "cohort": {"$eq": 2966},
    "joined_ms": {"$gte": 1793965637112},
    "active": {"$eq": 1},
}
COHORT_SORT = {"lscore": -1, "joined_ms": -1, "_id": 1}
COHORT_PLAN = [{"detail": "SEARCH standing USING INDEX idx_standing_cohort_lscore (<expr>=?)"}]
STANDING_INDEXES = {
    "idx_standing_id": ["_id"],
    "idx_standing_cohort_lscore": ["cohort", "lscore"],
    "idx_standing_new_key": ["new_key"],
    "idx_standing_level_last_ms": ["level", "last_ms"],
}


def test_the_cohort_sorted_new_promising_page_is_refused() -> None:
    why = sort_problem_on_nx(COHORT_PLAN, "standing", COHORT_FILTER, COHORT_SORT, STANDING_INDEXES)
    assert why is not None
    assert "mixes directions" in why and "idx_standing_cohort_lscore" in why


def test_the_page_read_in_its_rank_key_passes() -> None:
    plan = [{"detail": "SEARCH standing USING INDEX idx_standing_new_key (<expr>>?)"}]
    flt = {"new_key": {"$gt": ""}}
    assert sort_problem_on_nx(plan, "standing", flt, {"new_key": 1}, STANDING_INDEXES) is None


def test_equality_fields_first_then_exactly_the_sort_key_passes_in_either_direction() -> None:
    plan = [
        {"detail": "SEARCH hours USING INDEX idx_hours_member_id_status_order_key "
                   "(<expr>=? AND <expr>=? AND <expr><?)"}
    ]  # fmt: skip
    indexes = {"idx_hours_member_id_status_order_key": ["member_id", "status", "order_key"]}
    flt = {"status": {"$eq": "approved"}, "member_id": {"$eq": "m"}, "order_key": {"$lt": "x"}}
    assert sort_problem_on_nx(plan, "hours", flt, {"order_key": -1}, indexes) is None
    assert sort_problem_on_nx(plan, "hours", flt, {"order_key": 1}, indexes) is None


def test_columns_after_the_sort_keys_do_no_harm() -> None:
    plan = [{"detail": "SEARCH standings USING INDEX idx_standings_campaign_id_rank_key_points "
                       "(<expr>=? AND <expr>>?)"}]  # fmt: skip
    indexes = {"idx_standings_campaign_id_rank_key_points": ["campaign_id", "rank_key", "points"]}
    flt = {"campaign_id": {"$eq": "c"}, "rank_key": {"$gt": ""}}
    assert sort_problem_on_nx(plan, "standings", flt, {"rank_key": 1}, indexes) is None


def test_a_range_column_before_the_sort_key_is_refused() -> None:
    plan = [{"detail": "SEARCH posts USING INDEX idx_posts_answered_created_ms_wait_ms (<expr>>?)"}]
    indexes = {"idx_posts_answered_created_ms_wait_ms": ["answered_created_ms", "wait_ms"]}
    flt = {"answered_created_ms": {"$gte": 1}}
    assert sort_problem_on_nx(plan, "posts", flt, {"wait_ms": 1}, indexes) is not None


def test_an_equality_field_the_index_lacks_is_refused() -> None:
    plan = [{"detail": "SEARCH standing USING INDEX idx_standing_rank7 (<expr>>?)"}]
    indexes = {"idx_standing_rank7": ["rank7"]}
    flt = {"region": {"$eq": "moscow"}, "rank7": {"$gt": ""}}
    assert sort_problem_on_nx(plan, "standing", flt, {"rank7": 1}, indexes) is not None


def test_a_plan_that_names_no_index_is_refused() -> None:
    plan = [{"detail": "SCAN standing"}]
    assert sort_problem_on_nx(plan, "standing", {}, {"new_key": 1}, STANDING_INDEXES) is not None


def test_equality_is_eq_or_a_plain_value_and_never_a_range() -> None:
    flt = {"_id": "x", "a": {"$eq": 1}, "b": {"$gte": 2}, "c": {"$exists": True}}
    assert equality_fields(flt) == {"_id", "a"}


# MongoDB's explain (queryPlanner.winningPlan) of a find with sort and limit: a SORT stage when
# the server sorts what it read, none when an index scan gives the order.
MONGODB_SORTED = {
    "stage": "SORT",
    "sortPattern": {"lscore": -1, "joined_ms": -1, "_id": 1},
    "memLimit": 104857600,
    "limitAmount": 21,
    "type": "simple",
    "inputStage": {
        "stage": "FETCH",
        "inputStage": {"stage": "IXSCAN", "keyPattern": {"cohort": 1, "lscore": -1},
                       "indexName": "cohort_1_lscore_-1", "direction": "forward"},
    },
}  # fmt: skip
MONGODB_IN_ORDER = {
    "stage": "LIMIT",
    "limitAmount": 21,
    "inputStage": {
        "stage": "FETCH",
        "inputStage": {"stage": "IXSCAN", "keyPattern": {"new_key": 1},
                       "indexName": "new_key_1", "direction": "forward"},
    },
}  # fmt: skip


def test_a_blocking_sort_stage_on_mongodb_is_refused_and_an_index_order_passes() -> None:
    assert "SORT" in (sort_problem_on_mongodb(MONGODB_SORTED) or "")
    assert sort_problem_on_mongodb(MONGODB_IN_ORDER) is None
