"""Measuring models: output damage, agreement reports and the attack suite."""
