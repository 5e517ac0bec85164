"""One module per resource: pool, descriptor, health, models, metrics."""
