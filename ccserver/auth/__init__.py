"""Who is calling: users, passwords, tokens, lockout, and the guard the routes use."""
