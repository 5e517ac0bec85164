"""Runnable examples of poolserve clients."""
