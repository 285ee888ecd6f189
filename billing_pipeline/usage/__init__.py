"""Flow 1a: the meter declarations and each meter's daily usage per organization, in SQL."""
