"""Engagement's use cases: what the HTTP routes and the event handlers ask the service to do.

One class per idea, each built once by the composition root (app.py) with its ports (the store,
the factory of the service's unit of work, `EngagementUnitOfWork`, the service's clock, its
collaborators):

- `posts.Posts`: what members write (posts, comments, reactions, accepted answers);
- `hours.Hours`: volunteer hours (recorded, decided, credited from attendance at activities);
- `members.MemberEvents`: what the members service says (projection, counters, erasures);
- `activity.Activity`: what members did (the facts into their standings).

Each method reads what it needs through the store, applies the rules (contributions.py for what
members write, domain.py for scores and levels), and writes the new state with the events it
raises in a unit of work it opens and commits itself, staged through the repositories the unit
of work owns (`uow.posts`, `uow.hours`, ...: repositories.py); the time is its clock's. Routes and
handlers are adapters around these: they parse, call one method, and map a refusal (`Refused`,
`NotFound` of contributions.py) to an HTTP error or let a failure reach the bus.
"""

from services.engagement.usecases.activity import Activity
from services.engagement.usecases.base import Batch, Erase
from services.engagement.usecases.hours import DecideHours, Hours, MemberNotYetKnown, NewHours
from services.engagement.usecases.members import MemberEvents
from services.engagement.usecases.posts import (
    AcceptAnswer,
    Answer,
    NewComment,
    NewPost,
    NewReaction,
    Posted,
    Posts,
)

__all__ = [
    "AcceptAnswer",
    "Activity",
    "Answer",
    "Batch",
    "DecideHours",
    "Erase",
    "Hours",
    "MemberEvents",
    "MemberNotYetKnown",
    "NewComment",
    "NewHours",
    "NewPost",
    "NewReaction",
    "Posted",
    "Posts",
]
