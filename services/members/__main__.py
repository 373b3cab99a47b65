"""`python -m services.members`: run the members service."""

from services.members.app import SERVICE, MembersSettings, build
from shared.service import serve
from shared.settings import load_settings

settings = load_settings(MembersSettings, SERVICE)
serve(build(settings), settings, SERVICE)
