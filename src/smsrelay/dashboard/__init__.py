"""The dashboard: configure, test, track and analyse in a browser (server-rendered, at /ui)."""

from smsrelay.dashboard.app import create_dashboard_app

__all__ = ["create_dashboard_app"]
