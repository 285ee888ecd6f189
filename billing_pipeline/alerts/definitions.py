"""The alerting definitions, merged into the code location by billing_pipeline/definitions.py.

Loading them says once, in the log of every process that loads the code location (code server,
webserver, daemon, run workers), where alerts go, or that they go nowhere: a deployment without
a sink must not find out from silence.
"""

from __future__ import annotations

import logging

import dagster as dg

from billing_pipeline.alerts.sensors import billing_check_alerts, billing_run_failure_alerts
from billing_pipeline.alerts.sinks import configured_sinks, startup_line

_sinks = configured_sinks()
logging.getLogger(__name__).log(logging.INFO if _sinks else logging.WARNING, startup_line(_sinks))

defs = dg.Definitions(sensors=[billing_run_failure_alerts, billing_check_alerts])
