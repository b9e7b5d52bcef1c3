"""The transport: zerorpc 0.6.3 and pyzmq as expertd uses them (placeholder, filled below)."""
