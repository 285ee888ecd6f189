"""Alerts: tell the people who run billing when it goes wrong, where they already look.

A failed run of the code location, a failed asset check of the billing assets (and of the
webhook flow: dead letters) becomes one `Alert` (messages.py), recorded once per sink under a
deterministic key (deliveries.py) and delivered to the sinks configured in the environment
(sinks.py) by two sensors the daemon evaluates (sensors.py).
"""
