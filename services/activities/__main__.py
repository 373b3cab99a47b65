"""`python -m services.activities`: run the activities service."""

from services.activities.app import SERVICE, ActivitiesSettings, build
from shared.service import serve
from shared.settings import load_settings

settings = load_settings(ActivitiesSettings, SERVICE)
serve(build(settings), settings, SERVICE)
