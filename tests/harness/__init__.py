"""Shared test harness: tiny configs, offline tokenizers, tiny passages, framework selection."""
