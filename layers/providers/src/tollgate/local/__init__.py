"""Local mode: the same apps and code paths, with moto's server standing in for AWS."""
