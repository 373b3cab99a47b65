"""`python -m services.notifier`: run the notifier service."""

from services.notifier.app import SERVICE, NotifierSettings, build
from shared.service import serve
from shared.settings import load_settings

settings = load_settings(NotifierSettings, SERVICE)
serve(build(settings), settings, SERVICE)
