"""Tests of ccserver.scheduling."""
