"""Integrations with pipeline frameworks, each built on the one core operator."""
