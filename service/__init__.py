"""The prediction service: FastAPI over a verified model bundle."""

from service.app import create_app
from service.settings import Settings

__all__ = ["Settings", "create_app"]
