"""Serving: an OpenAI-compatible HTTP API over the compiled decoder, and a chat page."""
