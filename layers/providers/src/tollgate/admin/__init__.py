"""The admin plane: providers, model routes, tenants, keys and usage."""
