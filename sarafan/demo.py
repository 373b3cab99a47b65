"""`sarafan demo`: plays a small community against a running stack and tells what happened."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.topology import PORTS

# A small volunteer community in two regions; `by` is who brought them (word of mouth).
PEOPLE = [
    # name, region, roles, locale, brought by (index), interests
    ("Ольга Смирнова", "moscow", ["coordinator"], "ru", None, ["ecology", "events"]),
    ("Ivan Petrov", "moscow", ["volunteer"], "ru", None, ["ecology"]),
    ("Maria Sokolova", "kazan", ["volunteer"], "en", None, ["children", "education"]),
    ("Дмитрий Орлов", "moscow", ["volunteer"], "ru", 1, ["ecology", "sport"]),
    ("Анна Волкова", "moscow", ["volunteer"], "ru", 1, ["animals"]),
    ("Tom Becker", "kazan", ["partner"], "en", 2, ["education"]),
    ("Елена Кузнецова", "kazan", ["volunteer"], "ru", 2, ["children"]),
]
#: The volunteer hours the coordinator approves during the drive (hours_approved).
HOURS_APPROVED = 4 + 3 + 2.5
LATE_JOINERS = [
    ("Сергей Морозов", "moscow", ["volunteer"], "ru", 1, ["ecology"]),
    ("Olga Fedorova", "moscow", ["volunteer"], "en", 3, ["sport"]),
    ("Павел Новиков", "kazan", ["volunteer"], "ru", 2, ["education"]),
]


@dataclass
class Demo:
    urls: dict[str, str]
    token: str
    say: Callable[[str], None] = print
    members: list[dict[str, Any]] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    #: Posts of every kind made during the drive (each scores in it).
    posts: int = 0

    def __post_init__(self) -> None:
        self.http = httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=15)

    # -- HTTP with the client-side habits the API asks for ----------------------------------

    def post(self, service: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        key = str(uuid.uuid4())  # a retry after a lost answer must not do the work twice
        for attempt in range(5):
            try:
                r = self.http.post(
                    f"{self.urls[service]}{path}", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                time.sleep(0.5 * 2**attempt)
                continue
            if r.status_code in (502, 503, 504):
                time.sleep(0.5 * 2**attempt)
                continue
            if r.status_code >= 400:
                raise RuntimeError(f"POST {service}{path} → {r.status_code}: {r.text}")
            return r.json()
        raise RuntimeError(f"POST {service}{path} kept failing")

    def get(self, service: str, path: str, **params: Any) -> Any:
        r = self.http.get(f"{self.urls[service]}{path}", params=params)
        r.raise_for_status()
        return r.json()

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise RuntimeError(f"gave up waiting for {what}")

    # -- the story ------------------------------------------------------------------------------

    def join(self, person: tuple[Any, ...]) -> dict[str, Any]:
        name, region, roles, locale, brought_by, interests = person
        slug = name.split()[0].lower().encode("ascii", "ignore").decode() or "member"
        body: dict[str, Any] = {
            "display_name": name,
            "email": f"{slug}.{len(self.members)}.{self.run_id}@example.org",
            "region": region,
            "roles": roles,
            "interests": interests,
            "locale": locale,
            "consent": {"terms": True, "marketing": True},
        }
        if brought_by is not None:
            body["referral_code"] = self.members[brought_by]["referral_code"]
        member = self.post("members", "/v1/members", body)
        self.members.append(member)
        return member

    def known_to(self, service: str, member_id: str) -> bool:
        if service == "engagement":
            r = self.http.get(f"{self.urls[service]}/v1/members/{member_id}/engagement")
        else:
            r = self.http.get(f"{self.urls[service]}/v1/members/{member_id}/inbox")
            return r.status_code == 200 and bool(r.json()["items"])
        return r.status_code == 200

    def run(self) -> None:
        """The story, week by week, then what happened."""
        self.founders_join()
        campaign_id = self.drive_starts()
        self.friends_join()
        self.questions_and_answers()
        self.posts_and_reactions()
        self.hours_approved()
        self.late_joiners()
        self.summary(campaign_id, self.drive_ends(campaign_id))

    def wait_engagement_knows_everyone(self) -> None:
        for m in self.members:
            self.wait(
                f"{m['display_name']} in engagement",
                lambda m=m: self.known_to("engagement", m["member_id"]),
            )

    def founders_join(self) -> None:
        self.say("Week 1 — the community starts: three founders and a coordinator join.")
        for person in PEOPLE[:3]:
            m = self.join(person)
            self.say(f"  {m['display_name']} joined ({m['region']}), code {m['referral_code']}")
        self.wait_engagement_knows_everyone()

    def drive_starts(self) -> str:
        self.say("Week 2 — a referral drive with a prize draw starts.")
        now = datetime.now(UTC)
        campaign = self.post(
            "campaigns",
            "/v1/campaigns",
            {
                "name": f"Приведи друга / Bring a friend ({self.run_id})",
                "kind": "referral-drive",
                "starts_at": (now + timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(days=14)).isoformat(),
                "audience": {"regions": ["moscow", "kazan"]},
                "scoring": {"referral-made": 10, "post-created": 2, "hours-approved": 1},
                "milestones": [10, 20],
                "winners": 1,
                "winner_rule": "draw",
                "announcement": {
                    "ru": "Приведите друга в сообщество!",
                    "en": "Bring a friend to the community!",
                },
            },
        )
        campaign_id: str = campaign["campaign_id"]
        started = self.post("campaigns", f"/v1/campaigns/{campaign_id}/start", {})
        self.say(f"  campaign {campaign['name']!r} is active")
        if started.get("draw_commitment"):
            # The hash of the draw's secret, published now; the end reveals the secret.
            self.say(f"  draw commitment {started['draw_commitment'][:16]}… (in campaign-started)")
        return campaign_id

    def friends_join(self) -> None:
        self.say("Week 3 — founders bring friends by word of mouth.")
        for person in PEOPLE[3:]:
            m = self.join(person)
            referrer = next(x for x in self.members if x["member_id"] == m["referred_by"])
            self.say(f"  {m['display_name']} joined, brought by {referrer['display_name']}")
        self.wait_engagement_knows_everyone()

    def write_post(
        self, author: dict[str, Any], title: str, kind: str = "post", **more: Any
    ) -> dict[str, Any]:
        self.posts += 1
        body = {"author_id": author["member_id"], "kind": kind, "title": title, "tags": []}
        return self.post("engagement", "/v1/posts", {**body, **more})

    def questions_and_answers(self) -> None:
        self.say("Week 4 — questions, answers, stories and volunteer hours.")
        ivan, dmitry = self.members[1], self.members[3]
        question = self.write_post(
            dmitry,
            "Где взять перчатки для субботника?",
            "question",
            body="Нужны на 20 человек.",
            tags=["cleanup"],
        )
        answer = self.post(
            "engagement",
            f"/v1/posts/{question['post_id']}/comments",
            {"author_id": ivan["member_id"], "body": "На складе у парка, спросите Ольгу."},
        )
        self.post(
            "engagement",
            f"/v1/posts/{question['post_id']}/accept",
            {"comment_id": answer["comment_id"], "by": dmitry["member_id"]},
        )
        self.say(f"  {dmitry['display_name']} asked, {ivan['display_name']} answered (accepted)")

    def posts_and_reactions(self) -> None:
        coordinator, ivan, maria = self.members[:3]
        anna, tom, elena = self.members[4:7]
        posts = []
        for author, title, kind in (
            (ivan, "Субботник в парке: итоги", "event-report"),
            (maria, "Reading club for kids", "story"),
            (anna, "Приют ищет волонтёров", "post"),
            (ivan, "План на весну", "post"),
        ):
            post = self.write_post(author, title, kind)
            posts.append(post)
            for fan in (coordinator, elena, tom):
                if fan is not author:
                    self.post(
                        "engagement",
                        f"/v1/posts/{post['post_id']}/reactions",
                        {"member_id": fan["member_id"], "reaction": "thanks"},
                    )
        # A reaction costs nothing; a comment is taking part (it makes a referral count).
        for fan, post, text in (
            (elena, posts[1], "Можно я приведу дочку?"),
            (tom, posts[0], "Great work, count me in next time!"),
        ):
            self.post(
                "engagement",
                f"/v1/posts/{post['post_id']}/comments",
                {"author_id": fan["member_id"], "body": text},
            )

    def hours_approved(self) -> None:
        coordinator, ivan, maria, dmitry = self.members[:4]
        today = datetime.now(UTC).date().isoformat()
        for who, hours, activity in (
            (ivan, 4, "park cleanup"),
            (maria, 3, "reading club"),
            (dmitry, 2.5, "park cleanup"),
        ):  # HOURS_APPROVED in all
            entry = self.post(
                "engagement",
                "/v1/hours",
                {
                    "member_id": who["member_id"],
                    "hours": hours,
                    "activity": activity,
                    "date": today,
                },
            )
            self.post(
                "engagement",
                f"/v1/hours/{entry['entry_id']}/approve",
                {"by": coordinator["member_id"]},
            )
        self.say("  4 posts with reactions; 9.5 volunteer hours approved by the coordinator")

    def late_joiners(self) -> None:
        self.say("Week 5 — late joiners during the drive introduce themselves.")
        joined = [self.join(person) for person in LATE_JOINERS]
        self.wait_engagement_knows_everyone()
        for m in joined:
            # A referral counts once the friend takes part, not at the sign-up.
            self.write_post(m, f"Привет! Hello from {m['display_name']}")
            self.say(f"  {m['display_name']} joined by referral and said hello")

    def drive_ends(self, campaign_id: str) -> dict[str, Any]:
        self.say("Week 6 — the drive ends; the draw picks a winner.")
        # Let the last events reach the campaign before closing it: every friend took part,
        # so each referral scores 10, each post 2 and each approved hour 1.
        referrals = sum(1 for m in self.members if m.get("referred_by"))
        expected = referrals * 10 + self.posts * 2 + HOURS_APPROVED
        self.wait(
            "campaign points",
            lambda: (
                sum(
                    row["points"]
                    for row in self.get("campaigns", f"/v1/campaigns/{campaign_id}/leaderboard")[
                        "items"
                    ]
                )
                >= expected
            ),
        )
        self.post("campaigns", f"/v1/campaigns/{campaign_id}/end", {})
        ended: dict[str, Any] = self.wait(
            "the campaign result",
            lambda: (
                (c := self.get("campaigns", f"/v1/campaigns/{campaign_id}")).get("result") and c
            ),
        )
        return ended

    def summary(self, campaign_id: str, campaign: dict[str, Any]) -> None:
        say = self.say
        names = {m["member_id"]: m["display_name"] for m in self.members}
        say("\nWhat happened")
        board = self.get("engagement", "/v1/leaderboard", period="30d", limit=5)["items"]
        say("  Most engaged (30 days):")
        for row in board:
            names.setdefault(row["member_id"], row.get("display_name") or row["member_id"])
            if row["member_id"] in names:
                say(
                    f"    {row['rank']}. {names[row['member_id']]:<18} {row['points']:.0f} points"
                    f"  level {row.get('level', '?')}"
                )
        loyal = [
            names.get(m["member_id"], m["member_id"])
            for m in self.get("engagement", "/v1/segments/loyal")["items"]
        ]
        say(f"  Loyal pool: {', '.join(loyal) if loyal else 'nobody yet (loyalty takes months)'}")
        stats = self.get("engagement", "/v1/stats")
        say(
            f"  Community: {stats['members_total']} members, referral share of joins "
            f"{_pct(stats['referral_join_share'])}, answered by the community "
            f"{_pct(stats['answered_by_community_ratio'])}, hours (30 d) "
            f"{stats.get('hours_approved_30d', 0)}"
        )
        result = campaign["result"]
        say(
            f"  Campaign {campaign['name']!r}: {result['participants']} participants, "
            f"{result['points_total']:.0f} points"
        )
        for w in result["winners"]:
            say(
                f"    winner #{w['rank']}: {names.get(w['member_id'], w['member_id'])} "
                f"({w['points']:.0f} points)"
            )
        if result.get("draw"):
            say(
                f"    draw seed {result['draw']['seed'][:16]}… from the revealed secret and the "
                f"standings — check it with: sarafan campaigns verify-draw {campaign_id}"
            )
        report = self.get("campaigns", f"/v1/campaigns/{campaign_id}/report")
        say(
            f"  Was it worth it: {report['new_members_by_referral']} new members by referral, "
            f"{report['posts']} posts, {report['hours']:g} hours during the campaign"
        )
        say("  Messages sent (in-app inbox):")
        for m in self.members:
            items = self.get("notifier", f"/v1/members/{m['member_id']}/inbox")["items"]
            kinds = ", ".join(sorted({i["template"] for i in items}))
            say(f"    {m['display_name']:<18} {len(items)}: {kinds}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def default_urls() -> dict[str, str]:
    return {
        name: os.environ.get(
            f"SARAFAN_{name.upper()}_URL",
            f"http://127.0.0.1:{os.environ.get(f'SARAFAN_{name.upper()}_PORT', port)}",
        )
        for name, port in PORTS.items()
    }


def run_demo(
    token: str, urls: dict[str, str] | None = None, say: Callable[[str], None] = print
) -> Demo:
    demo = Demo(urls or default_urls(), token, say)
    demo.run()
    return demo
