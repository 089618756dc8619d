"""smsrelay.compat"""
