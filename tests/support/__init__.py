"""Helpers shared by the tests (not tests): models, reference checks, entry points, workers."""
