"""The arbiter service: ``fedsuite arbiter --config FILE``."""

from fedsuite.arbiter.config import ArbiterConfig
from fedsuite.arbiter.server import Arbiter

CONFIG = ArbiterConfig
SERVICE = Arbiter

__all__ = ["CONFIG", "SERVICE", "ArbiterConfig", "Arbiter"]
