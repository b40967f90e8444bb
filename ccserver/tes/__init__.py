"""GA4GH Task Execution Service (TES 1.1) tasks: API, staging and running."""
