"""Data access: the only layer that talks to AWS. Nothing above it imports boto3."""
