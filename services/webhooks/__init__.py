"""Signed webhooks to CRMs: stage changes and scores, retried until delivered."""
