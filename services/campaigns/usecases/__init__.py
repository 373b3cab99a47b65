"""The campaigns service's use cases, called by the HTTP routes, the event handlers and the
scheduler alike (each an adapter: parse, call, map errors):

- `lifecycle`: create, start, end, cancel a campaign, and the scheduler's tick;
- `scoring`: members' and engagement's events into activity facts and standings, and the
  `credit` of points with their milestones (the rule is `domain.credit`, its write `credit`).

They decide what changes (with the rules of `domain`) and leave reading and writing documents
to the store; the events a change raises go in the same write through a unit of work.
"""

from services.campaigns.usecases.credit import Award, StandingWrite, standing_write
from services.campaigns.usecases.lifecycle import Conflict, InvalidCampaign, Lifecycle, Missing
from services.campaigns.usecases.scoring import Scoring, UnknownMember

__all__ = [
    "Award",
    "Conflict",
    "InvalidCampaign",
    "Lifecycle",
    "Missing",
    "Scoring",
    "StandingWrite",
    "UnknownMember",
    "standing_write",
]
