"""GA4GH Task Execution Service (TES 1.1): tasks of any image, beside the 0.10 tasks.

The domain part: request schema, documents, views, listing and cancel, staging of inputs and
outputs, and running the tasks on the nodes.  No module here imports :mod:`ccserver.web`; the
routes are in :mod:`ccserver.web.tes_routes`.
"""
