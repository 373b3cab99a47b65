"""`python -m services.campaigns`: run the campaigns service."""

from services.campaigns.app import SERVICE, CampaignsSettings, build
from shared.service import serve
from shared.settings import load_settings

settings = load_settings(CampaignsSettings, SERVICE)
serve(build(settings), settings, SERVICE)
