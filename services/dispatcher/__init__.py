"""The dispatcher: agent sessions, heartbeats, assignment streams and batched status intake (SwarmKit's
manager/dispatcher). Run as many as wanted, all active (`python -m services.dispatcher`)."""
