"""llmctl-finetune."""
