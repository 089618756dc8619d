"""The connector engine: definition, rendering, response and delivery-report parsing.

Pure code: no network, no database, no clock. `dispatch` performs what this decides.
"""
