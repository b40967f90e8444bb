"""GA4GH TES 1.1 tasks: placement with the 0.10 tasks, attempts on the nodes, recovery."""
