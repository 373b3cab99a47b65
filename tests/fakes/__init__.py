"""In-memory fakes for fast tests (no servers)."""
