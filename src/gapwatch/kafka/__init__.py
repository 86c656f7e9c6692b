"""Kafka plumbing shared by the services and the CLI: settings, clients, topic management."""
