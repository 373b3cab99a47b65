"""The activities service's use cases, called by the HTTP routes, the event handlers and the
periodic jobs alike (each an adapter: parse, call, map refusals):

- `ledger`: seats without overbooking — claim, cancel, promote, and settling the sign-ups;
- `signups`: sign up, confirm ("I'm coming"), cancel;
- `planning`: create, change, publish and cancel an activity, and syncing its shifts;
- `attendance`: check-in and check-out, self check-in by code, no-shows, closing a shift;
- `tally`: a shift's figures, counted once per sign-up;
- `figures`: an activity's report, the community's stats and gauges;
- `links`: the coordinators' check-in links;
- `members`: the members projection, members leaving, erasure.
"""

from services.activities.usecases.attendance import Attendance, Mark
from services.activities.usecases.figures import CommunityGauges, activity_report, community
from services.activities.usecases.ledger import Claimed, Ledger
from services.activities.usecases.links import CheckinLinks, Link
from services.activities.usecases.members import MembersFollower
from services.activities.usecases.planning import Planning
from services.activities.usecases.signups import BY_MEMBER, BY_ORGANISER, SignUpResult, SignUps
from services.activities.usecases.tally import ShiftTally

__all__ = [
    "BY_MEMBER",
    "BY_ORGANISER",
    "Attendance",
    "CheckinLinks",
    "Claimed",
    "CommunityGauges",
    "Ledger",
    "Link",
    "Mark",
    "MembersFollower",
    "Planning",
    "ShiftTally",
    "SignUpResult",
    "SignUps",
    "activity_report",
    "community",
]
