"""smsrelay.api"""
