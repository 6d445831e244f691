"""Serving: fetch context, consumer scopes, prompt text, agent tools, named queries."""
