"""llmctl-data."""
