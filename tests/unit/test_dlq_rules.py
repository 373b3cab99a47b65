"""Where `sarafan dlq replay` may send a dead letter: only back to the event subject its own
DLQ subject ends with, in that service's stream (sarafan/dlq.py)."""

from __future__ import annotations

import pytest

from sarafan.dlq import DeadLetter, Refused, Target, dlq_table, printable, replay_target

GOOD = {"Sarafan-Dlq-Stream": "MEMBERS", "Sarafan-Dlq-Sequence": "42"}


def test_a_dead_letter_goes_back_to_the_subject_its_own_subject_ends_with():
    headers = {**GOOD, "Sarafan-Dlq-Subject": "$KV.sarafan_keys.k1"}  # a header is ignored
    target = replay_target("dlq.notifier.notifier-members.members.member-joined.m1", headers)
    assert target == Target("members.member-joined.m1", "MEMBERS", 42)


@pytest.mark.parametrize(
    ("dlq_subject", "reason"),
    [
        ("dlq.notifier.notifier-members.$KV.sarafan_keys.k1", "is not an event subject"),
        ("dlq.notifier.c.$JS.API.STREAM.DELETE.MEMBERS", "is not an event subject"),
        ("dlq.notifier.c._INBOX_members.x.y", "is not an event subject"),
        ("dlq.notifier.c.members.member-joined", "is not an event subject"),
        ("dlq.notifier.c.members.member-joined.m1.x", "is not an event subject"),
        ("dlq.notifier.c.members.campaign-started.c1", "members publishes no 'campaign-started'"),
        ("dlq.notifier.c.nobody.member-joined.m1", "nobody publishes no"),
        ("dlq.intruder.c.members.member-joined.m1", "is not a service's dead letter"),
        ("members.member-joined.m1", "is not a service's dead letter"),
    ],
)
def test_anything_but_a_known_services_event_subject_is_refused(dlq_subject, reason):
    with pytest.raises(Refused, match=reason.replace("$", "\\$")):
        replay_target(dlq_subject, GOOD)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({**GOOD, "Sarafan-Dlq-Stream": "KV_sarafan_keys"}, "names stream 'KV_sarafan_keys'"),
        ({"Sarafan-Dlq-Sequence": "42"}, "names stream ''"),
        ({**GOOD, "Sarafan-Dlq-Sequence": "0"}, "names no sequence"),
        ({**GOOD, "Sarafan-Dlq-Sequence": "-1"}, "names no sequence"),
        ({**GOOD, "Sarafan-Dlq-Sequence": ""}, "names no sequence"),
    ],
)
def test_a_dead_letter_naming_another_stream_or_no_sequence_is_refused(headers, reason):
    with pytest.raises(Refused, match=reason):
        replay_target("dlq.notifier.c.members.member-joined.m1", headers)


def test_the_listing_shows_the_subject_the_dead_letter_is_on_and_no_control_characters():
    headers = {
        "Sarafan-Dlq-Subject": "members.member-joined.someone-else",
        "Sarafan-Dlq-Consumer": "forged",
        "Sarafan-Dlq-Error": "boom\x1b[2J\x9b31m",
    }
    entry = DeadLetter.from_message(
        7, "dlq.notifier.notifier-members.members.member-joined.m1", headers, b"{}"
    )
    assert (entry.subject, entry.service, entry.consumer) == (
        "members.member-joined.m1",
        "notifier",
        "notifier-members",
    )
    table = dlq_table([entry])
    assert "\x1b" not in table and "\x9b" not in table and "boom\\x1b[2J\\x9b31m" in table
    assert printable("a\tb\nc") == "a\\tb\\nc"


def test_the_listing_reads_the_type_from_the_event_else_from_its_subject_not_a_ce_header():
    subject = "dlq.notifier.notifier-members.members.member-joined.m1"
    event = DeadLetter.from_message(1, subject, {"Ce-Type": "forged"}, b'{"type": "member-left"}')
    assert event.event_type == "member-left"  # structured mode: the type is in the body
    unreadable = DeadLetter.from_message(2, subject, {}, b"{not json")
    assert unreadable.event_type == "member-joined"
