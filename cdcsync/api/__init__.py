"""The REST API (Quart-Trio on Hypercorn), read-only over flow state except reset."""
