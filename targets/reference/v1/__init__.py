"""Protocol buffer definitions of the reference service (compiled at start-up)."""
