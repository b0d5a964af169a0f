from outreach.cli.main import main

__all__ = ["main"]
