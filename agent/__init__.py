"""The screening loop: brainstormers, the sandboxed executor, the campaign driver and the CLI."""
