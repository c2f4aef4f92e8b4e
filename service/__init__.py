"""The prediction service: FastAPI over a verified model bundle (``service.app.create_app``)."""
