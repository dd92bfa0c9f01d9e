"""Run the exporter sidecar: `python -m erp_connector_dagster.exporter`."""

import logging
import os
import sys

from erp_connector_dagster.exporter import exporter_address_from_env, serve_exporter
from erp_connector_dagster.settings import DATABASE_URL_ENV

LOG_LEVEL_ENV = "ERP_CONNECTOR_LOG_LEVEL"


def main() -> int:
    logging.basicConfig(
        level=os.environ.get(LOG_LEVEL_ENV, "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    database_url = os.environ.get(DATABASE_URL_ENV)
    if not database_url:
        logging.getLogger(__name__).error("%s is not set; the exporter needs it", DATABASE_URL_ENV)
        return 2
    host, port = exporter_address_from_env()
    serve_exporter(database_url, host, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
