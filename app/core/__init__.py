"""Configuration, errors and HTTP plumbing shared by every route."""
