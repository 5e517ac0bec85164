"""HTTP layer: one router per resource under ``app.api.routes``."""
