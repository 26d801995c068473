"""Generation backends (transformers, OpenAI-compatible HTTP) and the tiny-model builder."""
