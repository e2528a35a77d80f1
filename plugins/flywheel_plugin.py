"""Flywheel's Airflow plugin: task links to what each step produced, the report server, the Flywheel view."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from flywheel_ui.lazy import LazyApp
from flywheel_ui.links import STEP_LINKS, URL_PREFIX


class FlywheelPlugin(AirflowPlugin):
    name = "flywheel"
    global_operator_extra_links = STEP_LINKS
    fastapi_apps = [  # noqa: RUF012 (AirflowPlugin declares these as plain class attributes)
        {"app": LazyApp("flywheel_ui.app:app"), "url_prefix": URL_PREFIX, "name": "Flywheel"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Flywheel",
            "href": "flywheel/view",
            "destination": "nav",
            "url_route": "flywheel",
            "nav_top_level": True,
        }
    ]
