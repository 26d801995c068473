"""Behaviour-initialisation data (docs/method.md §2): sample → verify → build."""
