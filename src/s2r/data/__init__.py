"""Behaviour-initialisation data (METHOD.md §2): sample → verify → build."""
