"""llmctl-parallel."""
