"""Monitoring keeps its data in RRD files, not in the database."""
