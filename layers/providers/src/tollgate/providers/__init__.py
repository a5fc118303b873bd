"""Provider adapters and the registry that resolves a model name to one of them."""
