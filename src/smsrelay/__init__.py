"""smsrelay: a self-hosted SMS connector platform."""

__version__ = "0.1.0"
