"""Assembly: identity graph, traits, scores and snapshots over the lakehouse."""
