"""The cluster's certificate authority service: joins, renewals, join tokens (docs/security.md)."""
