"""`python -m services.engagement`: run the engagement service."""

from services.engagement.app import SERVICE, EngagementSettings, build
from shared.service import serve
from shared.settings import load_settings

settings = load_settings(EngagementSettings, SERVICE)
serve(build(settings), settings, SERVICE)
