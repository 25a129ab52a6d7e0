"""Alerts: a failed run (including failed verifications and drills) or a stale target notifies every channel."""
