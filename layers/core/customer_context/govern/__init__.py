"""Governance: regulations (suppression, deletion everywhere)."""
