"""The durable message queue.

- `model`: messages, recipients, leases and updates as frozen values (times in epoch ms).
- `store`: the `QueueStore` protocol every store implements, its errors and argument checks.
- `sql`: the schema, its migrations and the statements, written once for both databases.
- `sqlstore`: `SqlQueueStore`, every store method written once over a database session.
- `sqlite`: `SqliteQueueStore`, on aiosqlite in WAL mode with synchronous=FULL.
- `postgres`: `PostgresQueueStore`, on an asyncpg pool; several nodes may share it.
- `group_commit`: concurrent enqueues share one durable write (both stores).
- `sqlite_tx`: cancellation-safe transactions on one aiosqlite connection.
"""
