"""smsrelay.sandbox"""
