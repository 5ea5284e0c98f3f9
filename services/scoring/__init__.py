"""scoring: turns each lead's event stream into fit, engagement, total and stage changes."""
