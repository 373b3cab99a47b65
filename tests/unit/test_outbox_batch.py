"""The outbox's batch form, its pure parts: what a batch document holds and how it is settled."""

from __future__ import annotations

from shared.clock import epoch_ms, utcnow
from shared.events import MemberLeft, new_event
from shared.outbox_batch import BATCH_MAX, batch_document, chunks, settle_update


def left(member_id: str):
    return new_event(MemberLeft(member_id=member_id, left_at=utcnow()))


def test_a_batch_document_names_the_document_each_event_announces_and_starts_its_lease() -> None:
    a1, a2, b1 = left("a"), left("a"), left("b")
    batch = batch_document("B", "members", {"a": [a1, a2], "b": [b1]})
    assert batch["owners"] == {a1.id: "a", a2.id: "a", b1.id: "b"}
    assert set(batch["outbox"]) == {a1.id, a2.id, b1.id}
    assert batch["outbox"][b1.id] == b1.model_dump(mode="json")
    assert batch["collection"] == "members"
    assert batch["lease_until_ms"] > epoch_ms(utcnow())  # the writer's, for now


def test_a_batch_with_events_left_is_released_to_the_sweeper_without_what_went() -> None:
    assert settle_update(["e1"], {}, pending_left=True) == {
        "$set": {"lease_until_ms": 0},
        "$unset": {"outbox.e1": ""},
    }
    # Nothing went (NATS away): released, and no empty operator (MongoDB refuses `$unset: {}`).
    assert settle_update([], {}, pending_left=True) == {"$set": {"lease_until_ms": 0}}


def test_a_batch_holding_only_dead_events_is_parked_out_of_the_sweep() -> None:
    dead = {"e2": {"event": {}, "error": "MaxPayloadError", "at_ms": 1}}
    assert settle_update(["e1"], dead, pending_left=False) == {
        "$set": {"outbox_dead.e2": dead["e2"]},
        "$unset": {"outbox.e1": "", "outbox.e2": "", "lease_until_ms": ""},
    }


def test_documents_are_written_a_thousand_per_batch() -> None:
    docs = [{"_id": i} for i in range(2 * BATCH_MAX + 1)]
    assert [len(c) for c in chunks(docs)] == [BATCH_MAX, BATCH_MAX, 1]
