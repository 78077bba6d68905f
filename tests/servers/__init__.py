"""Servers the test suite starts itself (a Galera cluster, PgBouncer, read-only replicas),
each on free loopback ports, stopped by the pid it started and never by name."""
