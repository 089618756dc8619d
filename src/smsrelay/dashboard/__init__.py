"""smsrelay.dashboard"""
