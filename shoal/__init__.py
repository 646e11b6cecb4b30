"""shoal: a SwarmKit-style container orchestrator built as microservices over NATS and a Raft store."""

__version__ = "0.1.0"
