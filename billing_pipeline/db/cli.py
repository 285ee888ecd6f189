"""`billing-pipeline db …`: migrate the schema."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="Migrate the database schema (Alembic).")
    commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    upgrade = commands.add_parser("upgrade", help="Apply migrations up to the newest revision.")
    upgrade.add_argument(
        "--billing-only",
        action="store_true",
        help="Only the pipeline's `billing` schema: for an existing application database whose "
        "tables must not be touched.",
    )
    upgrade.set_defaults(handler=_upgrade)

    downgrade = commands.add_parser("downgrade", help="Revert migrations down to a revision.")
    downgrade.add_argument("revision", help="Target revision, e.g. `base` or `billing@-1`.")
    downgrade.set_defaults(handler=_downgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from billing_pipeline.db import migrate
    from billing_pipeline.db.database import database_url

    target = migrate.BILLING_HEAD if args.billing_only else migrate.ALL_HEADS
    with database_url() as url:
        migrate.upgrade(url, target)
    print(f"database migrated to {target}")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    from billing_pipeline.db import migrate
    from billing_pipeline.db.database import database_url

    with database_url() as url:
        migrate.downgrade(url, args.revision)
    print(f"database downgraded to {args.revision}")
    return 0
