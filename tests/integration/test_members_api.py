"""Members API against real NATS and MongoDB: profiles, updates, listing filters, referrals."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers import wait_until
from tests.integration.conftest import join_body


async def _collect(nc: Any, subject: str = "members.>") -> tuple[list[Any], Any]:
    seen: list[Any] = []

    async def on(msg: Any) -> None:
        seen.append(msg)

    return seen, await nc.subscribe(subject, cb=on)


def _events(seen: list[Any], subject: str) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in seen if m.subject == subject]


async def test_join_normalises_contacts_and_records_consent_times(services):
    async with services("members") as s:
        http = s["members"].http
        r = await http.post(
            "/v1/members",
            json=join_body(
                email=" Olga@Example.ORG",
                phone="8 (916) 123-45-67",
                telegram="@Olga_K",
                interests=[" Ecology", "ecology", "Animals"],
                timezone="Asia/Yekaterinburg",
                consent={"terms": True, "marketing": False},
            ),
        )
        assert r.status_code == 201, r.text
        member = r.json()
        assert member["contacts"] == {
            "email": "olga@example.org",
            "phone": "+79161234567",
            "telegram": "olga_k",
        }
        assert member["interests"] == ["ecology", "animals"]
        assert member["consent"]["terms"] is True and member["consent"]["terms_at"]
        assert member["consent"]["marketing"] is False and member["consent"]["marketing_at"] is None
        got = (await http.get(f"/v1/members/{member['member_id']}")).json()
        assert got == member


async def test_bad_join_input_is_422_with_a_clear_code(services):
    async with services("members") as s:
        http = s["members"].http
        cases = {
            "invalid_email": join_body(email="not-an-email"),
            "invalid_phone": join_body(phone="+7 12"),
            "invalid_telegram": join_body(telegram="@ab"),
            "invalid_request": join_body(consent={"terms": False, "marketing": True}),
        }
        for code, body in cases.items():
            r = await http.post("/v1/members", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (422, code), r.text
        r = await http.post("/v1/members", json=join_body(timezone="Mars/Olympus"))
        assert r.status_code == 422 and "time zone" in r.text
        r = await http.post("/v1/members", json=join_body(email=None))
        assert r.status_code == 422 and "at least one contact" in r.text


async def test_each_contact_is_unique_and_a_join_answers_one_409_whichever_was_taken(services):
    async with services("members") as s:
        http = s["members"].http
        first = join_body(phone="+7 916 000 11 22", telegram="first_one")
        assert (await http.post("/v1/members", json=first)).status_code == 201
        answers = []
        for kind, value in [
            ("email", first["email"].upper()),
            ("phone", "89160001122"),
            ("telegram", "@First_One"),
        ]:
            r = await http.post("/v1/members", json=join_body(**{kind: value}))
            assert r.status_code == 409, r.text
            answers.append(r.json())
        # Before, email_taken / phone_taken / telegram_taken told a sign-up key which one.
        assert answers == [answers[0]] * 3
        assert answers[0]["error"]["code"] == "contact_taken"
        assert "email" not in answers[0]["error"]["message"]


async def test_contacts_are_checked_before_the_referral_code_so_codes_reveal_no_owner(services):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()
        boris = (await http.post("/v1/members", json=join_body(telegram="boris_tg"))).json()
        taken = {"email": anna["contacts"]["email"]}
        alone = await http.post("/v1/members", json=join_body(**taken))
        assert alone.status_code == 409
        for code in (anna["referral_code"], boris["referral_code"], "NOPE123", "X" * 32):
            r = await http.post("/v1/members", json=join_body(**taken, referral_code=code))
            assert (r.status_code, r.json()) == (409, alone.json()), code
        # A taken telegram with Anna's code: the same answer (not self_referral, not
        # telegram_taken).
        r = await http.post(
            "/v1/members", json=join_body(telegram="@Boris_TG", referral_code=anna["referral_code"])
        )
        assert (r.status_code, r.json()) == (409, alone.json())
        # With an Idempotency-Key, the first answer and its repeat are that same answer too.
        body = join_body(**taken, referral_code=boris["referral_code"])
        for _ in range(2):
            r = await http.post("/v1/members", json=body, headers={"Idempotency-Key": "taken-1"})
            assert (r.status_code, r.json()) == (409, alone.json())


async def test_concurrent_joins_with_one_email_make_one_member_and_one_answer_for_the_rest(
    services,
):
    async with services("members") as s:
        http = s["members"].http
        email = join_body()["email"]
        bodies = [join_body(email=email, telegram=f"racer_{i}") for i in range(6)]
        answers = await asyncio.gather(*(http.post("/v1/members", json=b) for b in bodies))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201] + [409] * 5, [r.text for r in answers]
        refused = [r.json() for r in answers if r.status_code == 409]
        assert all(body["error"]["code"] == "contact_taken" for body in refused)


async def test_patch_emits_member_updated_with_exactly_the_changed_fields(services, nc):
    seen, sub = await _collect(nc)
    async with services("members") as s:
        http = s["members"].http
        # The join a second back, at half past: a time on a whole second is written without a
        # fraction ("…08Z"), which sorts before a later one of the same second ("…08.014000Z").
        s["members"].clock.at(
            (datetime.now(UTC) - timedelta(seconds=1)).replace(microsecond=500_000)
        )
        member = (await http.post("/v1/members", json=join_body(region="moscow"))).json()
        s["members"].clock.reset()
        mid = member["member_id"]
        r = await http.patch(
            f"/v1/members/{mid}",
            json={
                "region": "kazan",
                "locale": "ru",
                "phone": "+7 916 555 44 33",
                "consent": {"marketing": False},
                "interests": ["Animals", "animals", "ecology"],
                "roles": ["coordinator"],
            },
        )
        assert r.status_code == 200, r.text
        updated = r.json()
        assert updated["region"] == "kazan" and updated["version"] == 2
        assert updated["contacts"]["phone"] == "+79165554433"
        assert updated["consent"]["marketing"] is False
        assert updated["consent"]["marketing_at"] > updated["consent"]["terms_at"]
        assert (updated["interests"], updated["roles"]) == (["animals", "ecology"], ["coordinator"])
        listed = await http.get(
            "/v1/members", params={"interest": "animals", "role": "coordinator"}
        )
        assert [m["member_id"] for m in listed.json()["items"]] == [mid]

        subject = f"members.member-updated.{mid}"
        await wait_until(lambda: _events(seen, subject), message="no member-updated")
        changes = _events(seen, subject)[0]["data"]["changes"]
        assert changes == {
            "region": "kazan",
            "interests": ["animals", "ecology"],
            "roles": ["coordinator"],
            "contacts": {
                "email": member["contacts"]["email"],
                "phone": "+79165554433",
                "telegram": None,
            },
            "consent": {"terms": True, "marketing": False},
        }
        # The same values again change nothing: no event, no new version.
        again = await http.patch(f"/v1/members/{mid}", json={"region": "kazan"})
        assert again.json()["version"] == 2
        assert (await http.get(f"/v1/members/{mid}")).json() == again.json()
    await sub.unsubscribe()
    assert len(_events(seen, subject)) == 1


async def test_patch_refuses_what_the_rules_forbid(services):
    async with services("members") as s:
        http = s["members"].http
        member = (await http.post("/v1/members", json=join_body())).json()
        other = (await http.post("/v1/members", json=join_body())).json()
        url = f"/v1/members/{member['member_id']}"
        expect = [
            ({"email": None}, 422, "no_contact"),
            ({"consent": {"terms": False}}, 422, "terms_required"),
            ({"referral_code": "KQX7MAC"}, 422, "invalid_request"),
            ({"referred_by": other["member_id"]}, 422, "invalid_request"),
            ({"region": None}, 422, "invalid_request"),
            ({"email": other["contacts"]["email"]}, 409, "email_taken"),
        ]
        for body, status, code in expect:
            r = await http.patch(url, json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (body, r.text)
        r = await http.patch(url, json={"region": "x"}, headers={"If-Match": '"7"'})
        assert r.status_code == 412
        r = await http.patch(url, json={"region": "x"}, headers={"If-Match": '"1"'})
        assert r.status_code == 200 and r.headers["ETag"] == '"2"'
        assert (await http.patch("/v1/members/nobody", json={"region": "x"})).status_code == 404


async def test_listing_filters_by_region_role_and_interest(services):
    async with services("members") as s:
        http = s["members"].http
        specs = [
            ("moscow", ["volunteer"], ["ecology"]),
            ("moscow", ["coordinator", "volunteer"], ["animals"]),
            ("kazan", ["coordinator"], ["ecology", "animals"]),
            ("kazan", ["partner"], []),
        ]
        ids = []
        for region, roles, interests in specs:
            r = await http.post(
                "/v1/members", json=join_body(region=region, roles=roles, interests=interests)
            )
            ids.append(r.json()["member_id"])

        async def listed(**params: Any) -> list[str]:
            r = await http.get("/v1/members", params=params)
            assert r.status_code == 200, r.text
            return [m["member_id"] for m in r.json()["items"]]

        assert await listed() == ids  # join order
        assert await listed(region="moscow") == ids[:2]
        assert await listed(role="coordinator") == ids[1:3]
        assert await listed(interest="Ecology") == [ids[0], ids[2]]
        assert await listed(region="kazan", role="coordinator", interest="animals") == [ids[2]]
        assert (await http.get("/v1/members", params={"role": "king"})).status_code == 422
        assert (await http.get("/v1/members", params={"cursor": "junk"})).status_code == 422
        await http.delete(f"/v1/members/{ids[3]}")
        assert await listed() == ids[:3]
        assert await listed(status="left") == [ids[3]]


async def test_referral_made_on_join_and_listed_for_the_referrer(services, nc):
    seen, sub = await _collect(nc)
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()
        code = anna["referral_code"].lower()  # case-insensitive on input
        bob = (await http.post("/v1/members", json=join_body(referral_code=code))).json()
        assert bob["referred_by"] == anna["member_id"]
        subject = f"members.referral-made.{anna['member_id']}"
        await wait_until(lambda: _events(seen, subject), message="no referral-made")
        made = _events(seen, subject)[0]["data"]
        assert (made["referred_id"], made["code"]) == (bob["member_id"], anna["referral_code"])
        r = (await http.get(f"/v1/members/{anna['member_id']}/referrals")).json()
        assert r["total"] == 1 and [i["member_id"] for i in r["items"]] == [bob["member_id"]]
        unknown = await http.post("/v1/members", json=join_body(referral_code="ZZZZZZZ"))
        assert unknown.status_code == 422
        assert unknown.json()["error"]["code"] == "unknown_referral_code"
    await sub.unsubscribe()


async def test_the_first_referrer_keeps_the_credit(services):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()
        boris = (await http.post("/v1/members", json=join_body())).json()
        friend = join_body(phone="+7 903 111 22 33", referral_code=anna["referral_code"])
        joined = await http.post("/v1/members", json=friend)
        assert joined.status_code == 201
        # The same person joining again through another code: refused, credit unchanged.
        for contact in ({"email": friend["email"]}, {"email": None, "phone": "89031112233"}):
            again = await http.post(
                "/v1/members", json={**friend, **contact, "referral_code": boris["referral_code"]}
            )
            assert again.status_code == 409, again.text
        # Nor can the referrer be changed afterwards.
        patched = await http.patch(
            f"/v1/members/{joined.json()['member_id']}", json={"referred_by": boris["member_id"]}
        )
        assert patched.status_code == 422

        async def total(member: dict[str, Any]) -> int:
            return (await http.get(f"/v1/members/{member['member_id']}/referrals")).json()["total"]

        assert (await total(anna), await total(boris)) == (1, 0)


async def test_self_referral_is_refused_on_the_mailbox_an_address_reaches(services):
    async with services("members") as s:
        http = s["members"].http
        owners = {
            "example": (await http.post("/v1/members", json=join_body())).json(),
            "gmail": (
                await http.post("/v1/members", json=join_body(email="anna.volkova@gmail.com"))
            ).json(),
        }
        local = owners["example"]["contacts"]["email"].split("@")[0]
        for owner, email in (
            ("example", f"{local}+1@example.org"),
            ("example", f"{local.upper()}+drive@Example.ORG"),
            ("gmail", "a.n.n.a.volkova@gmail.com"),
            ("gmail", "annavolkova+2@googlemail.com"),
        ):
            code = owners[owner]["referral_code"]
            r = await http.post("/v1/members", json=join_body(email=email, referral_code=code))
            assert (r.status_code, r.json()["error"]["code"]) == (422, "self_referral"), email
        # Without a code the same address is another member (only the referral is refused).
        r = await http.post("/v1/members", json=join_body(email=f"{local}+1@example.org"))
        assert r.status_code == 201, r.text
        got = (await http.get(f"/v1/members/{owners['example']['member_id']}/referrals")).json()
        assert got["total"] == 0


async def test_a_member_who_left_cannot_refer(services):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()
        assert (await http.delete(f"/v1/members/{anna['member_id']}")).status_code == 204
        r = await http.post("/v1/members", json=join_body(referral_code=anna["referral_code"]))
        assert r.status_code == 422 and r.json()["error"]["code"] == "referrer_left"


async def test_a_join_retried_with_the_same_idempotency_key_creates_one_member(services):
    async with services("members") as s:
        http = s["members"].http
        body, key = join_body(), {"Idempotency-Key": "join-once"}
        first = await http.post("/v1/members", json=body, headers=key)
        second = await http.post("/v1/members", json=body, headers=key)
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        assert len((await http.get("/v1/members")).json()["items"]) == 1
        other = await http.post("/v1/members", json=join_body(), headers=key)
        assert other.status_code == 422
