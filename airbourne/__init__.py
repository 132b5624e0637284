"""Airbourne: a flight-booking platform."""
