"""The one list of the platform's parts: the services, their ports and their streams.

Everything else reads these names from here: the settings (a service's default HTTP port), the
event subjects (`<service>.<type>.<id>`), the bus (each service's own stream and the DLQ), the
NATS permissions, the operator CLI and `sarafan up`. Adding a service starts here.

Plain constants and no imports: the container's health check reads this module on every probe.
"""

from __future__ import annotations

#: The services, in the order they start and are listed.
SERVICES: tuple[str, ...] = ("members", "engagement", "campaigns", "notifier", "activities")

#: Each service's default HTTP port (`SARAFAN_<SERVICE>_PORT` overrides it).
PORTS: dict[str, int] = {
    "members": 8001,
    "engagement": 8002,
    "campaigns": 8003,
    "notifier": 8004,
    "activities": 8005,
}

#: Each service owns one stream holding every event it publishes (subjects `<service>.>`).
STREAMS: dict[str, str] = {
    "members": "MEMBERS",
    "engagement": "ENGAGEMENT",
    "campaigns": "CAMPAIGNS",
    "notifier": "NOTIFIER",
    "activities": "ACTIVITIES",
}

#: The dead-letter stream every service writes to (subjects `dlq.<service>.<consumer>.<subject>`).
DLQ_STREAM = "DLQ"

#: Streams a service reads and declares ahead of their producers (with the producer's own
#: configuration: `Bus` does it on connecting, before binding its consumers), so it starts and
#: is ready alone or before them: the notifier reads every other stream; engagement and
#: campaigns read ACTIVITIES, whose service starts after them.
EXTRA_STREAMS: dict[str, tuple[str, ...]] = {
    "engagement": ("ACTIVITIES",),
    "campaigns": ("ACTIVITIES",),
    "notifier": ("MEMBERS", "ENGAGEMENT", "CAMPAIGNS", "ACTIVITIES"),
}


def read_ahead(service: str) -> dict[str, str]:
    """The streams `service` declares ahead of their producers (EXTRA_STREAMS), each with the
    service that produces it (stream name → producing service)."""
    producer = {stream: name for name, stream in STREAMS.items()}
    return {stream: producer[stream] for stream in EXTRA_STREAMS.get(service, ())}


#: The service whose erasure purges the dead-letter stream of a member's messages.
ERASURE_OWNER = "members"

#: The operator's NATS user (the `sarafan` CLI): anything in the application account.
ADMIN_USER = "admin"

#: Where the embedded stack (`sarafan up`) listens by default, each beside its variable.
NATS_PORT = 4222  # SARAFAN_NATS_PORT
NATS_HTTP_PORT = 8222  # SARAFAN_NATS_HTTP_PORT (monitoring)
MONGO_PORT = 27017  # SARAFAN_MONGO_PORT
