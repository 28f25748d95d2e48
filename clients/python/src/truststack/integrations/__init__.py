"""Framework integrations: thin layers over ``truststack.Client`` (import the one you use)."""
