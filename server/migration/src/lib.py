"""The registry: the order of the tuple is the order in which migrations are applied."""

from rung import Migration
from server.migration.src import m20260408_000001_create_todos_table


class Migrator:
    @staticmethod
    def migrations() -> tuple[Migration, ...]:
        return (Migration.from_module(m20260408_000001_create_todos_table),)
