"""Alerting core: rules, evaluation over window figures, and the alert lifecycle."""
