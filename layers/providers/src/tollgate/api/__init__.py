"""The FastAPI apps: routers per resource, auth as dependencies, errors rendered in one place."""
