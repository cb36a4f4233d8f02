"""Widgets of the app, one per file: chat, input, progress, dashboard panels."""
