"""Destinations: where change events are applied."""
