"""PostgreSQL schema and data access of the platform.

Decision: the schema is a series of plain, numbered SQL migrations (``models/migrations/NNNN_name.sql``)
applied in order by a small runner (:func:`models.db.migrate`), and data access is plain SQL through
psycopg 3 (async connections in the services). There is no ORM yet: the tables are few, the queries
are simple and explicit SQL keeps locking (``SELECT ... FOR UPDATE``) and idempotency
(``INSERT ... ON CONFLICT``) visible where they matter.

Modules:

- :mod:`models.db` — migrations, the embedded PostgreSQL server, connection helpers.
- :mod:`models.bids` — bids, cleared intervals (market outcomes) and unit state of the simulated market.
- :mod:`models.cycles` — the record of AutoBidder cycles.

Market times are naive ``timestamp`` columns in AEST, interval-ending (as everywhere in the platform);
wall-clock moments (``received_at``, ``started_at``) are ``timestamptz``.
"""
