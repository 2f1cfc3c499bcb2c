"""The web layer: Flask blueprints and what only they use.

- ``api``: the participant JSON API (``/api/...``, API.md);
- ``audio``: clips under opaque tokens (``/audio/<token>``);
- ``pages``: the participant page (``/e/<slug>``) and the admin dashboard's HTML;
- ``admin``: the admin JSON/CSV API (``/admin/api/...``);
- ``security``: session tokens, CSRF, input checks, rate limits, JSON error replies.

The session flow itself lives below (``listening_test.flow``, pure; ``listening_test.store``,
its SQL); handlers parse, call it and reply.
"""
