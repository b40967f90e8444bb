"""Docker engines (nodes): clients, node information and container operations."""
