"""The sandbox provider: a fake SMS provider with a web inbox, like a mail catcher for SMS.

Build it with `create_sandbox_app(Sandbox(settings))`, mount it (e.g. under `/sandbox`) or
serve it alone with `serve_sandbox`; the host calls `Sandbox.start()` / `close()`.
"""

from smsrelay.sandbox.app import create_sandbox_app
from smsrelay.sandbox.connectors import sandbox_connector_yaml
from smsrelay.sandbox.provider import Sandbox
from smsrelay.sandbox.server import serve_sandbox
from smsrelay.sandbox.settings import ChaosSettings, SandboxSettings

__all__ = [
    "ChaosSettings",
    "Sandbox",
    "SandboxSettings",
    "create_sandbox_app",
    "sandbox_connector_yaml",
    "serve_sandbox",
]
