"""Tests of ccserver.notifications and ccserver.httpauth."""
