"""The thin `llmctl` click group; every command comes from a plugin's register_commands hook."""
