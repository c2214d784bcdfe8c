"""The operations engine: durable intent, its runner, registry, undo and alerts."""
