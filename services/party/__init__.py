"""The party service: ``fedsuite party --config FILE``."""

from fedsuite.party.config import PartyConfig
from fedsuite.party.server import Party

CONFIG = PartyConfig
SERVICE = Party

__all__ = ["CONFIG", "SERVICE", "PartyConfig", "Party"]
