"""The application's migrations: one module each, registered in order in ``lib.py``."""
