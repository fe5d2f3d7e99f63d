"""The history: every sweep of every night in one store; when a series changed, and what with.

The package, from pure to I/O (docs/history.md explains the method; a stage in
tests/unit/test_packaging.py keeps it beside the report, above the analysis):

- :mod:`~harness.history.detect` -- pure numpy: E-divisive means with Otava's t-test and
  merge over one value per night, the Hodges-Lehmann size of a change and its interval;
- :mod:`~harness.history.schema` -- the store: tables, schema version and upgrades, a
  ``--db`` path or URL to a connection (passwords masked in every message);
- :mod:`~harness.history.ingest` -- a sweep folder read through the results contract into
  the store (series keys, each run's scaling efficiency);
- :mod:`~harness.history.changes` -- series out of the store, their change points, sizes
  and ``what_changed``;
- :mod:`~harness.history.render` -- text, Markdown, JSON, the CI verdict and the HTML page
  (drawn by the report's page code);
- :mod:`~harness.history.commands` -- ``distrinews-bench history ingest|changes|check|report``
  and a finished sweep's own ingest, as typed functions.

Nothing here is imported by a sweep's run path: SQLAlchemy loads only when a history command
or the end of a sweep needs it.
"""
