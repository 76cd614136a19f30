"""The demo: a simulated organisation (``org``) and the one simulated Admin API (``admin_api``).

``serve --demo`` runs both; the tests run the same simulated Admin API with fixture rows.
"""
