"""smsrelay.dispatch"""
