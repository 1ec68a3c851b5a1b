"""fedsuite: the coordinator, party and arbiter services and the command line."""
