"""The pool simulator: an OpenAI-compatible server, hardware profiles, task generators."""
