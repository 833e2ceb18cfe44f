"""The durable message queue.

- `model`: messages, recipients, leases and updates as frozen values (times in epoch ms).
- `store`: the `QueueStore` protocol every store implements, and its errors.
- `sql`: the schema and statements, written once for SQLite and PostgreSQL.
- `sqlite`: `SqliteQueueStore`, on aiosqlite in WAL mode with synchronous=FULL.
"""
