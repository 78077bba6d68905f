"""One racer: waits for the start signal, then calls rung.upgrade; prints what it applied."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time

from sqlalchemy.ext.asyncio import create_async_engine

import rung


async def main(
    url: str, root: str, package: str, names: list[str], start: float, per: bool
) -> None:
    sys.path.insert(0, root)
    registry = [
        rung.Migration.from_module(importlib.import_module(f"{package}.{n}")) for n in names
    ]
    engine = create_async_engine(url)
    time.sleep(max(0.0, start - time.time()))
    try:
        done = await rung.upgrade(engine, registry, per_migration=per, lock_timeout=60)
    finally:
        await engine.dispose()
    print(json.dumps([d.name for d in done]))


if __name__ == "__main__":
    url, root, package, names, start, per = sys.argv[1:7]
    asyncio.run(main(url, root, package, names.split(","), float(start), per == "1"))
