"""The HTTP side of ccserver: Klein routes, the Site with its limits and request log."""
