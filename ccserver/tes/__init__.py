"""GA4GH Task Execution Service (TES 1.1): tasks of any image, beside the 0.10 tasks.

The domain part: request schema, documents, views, listing and cancel.  No module here
imports :mod:`ccserver.web`; the routes are in :mod:`ccserver.web.tes_routes`.
"""
