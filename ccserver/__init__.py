"""ccserver: a Twisted implementation of CC-Server (Curious Containers)."""

__version__ = "0.11.0.dev0"
