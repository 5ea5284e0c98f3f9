"""pipeline: persists scores and stage changes, and serves them to ops and CRMs over REST."""
