"""llmctl-eval."""
