"""The coordinator service: ``fedsuite coordinator --config FILE``."""

from fedsuite.coordinator.config import CoordinatorConfig
from fedsuite.coordinator.server import Coordinator

CONFIG = CoordinatorConfig
SERVICE = Coordinator

__all__ = ["CONFIG", "SERVICE", "CoordinatorConfig", "Coordinator"]
