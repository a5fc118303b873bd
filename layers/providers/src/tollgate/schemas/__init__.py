"""Wire schemas: what crosses Tollgate's public and admin APIs."""
