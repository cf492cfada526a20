"""Worker fixtures (own broker, worker processes) for the tests in this folder."""

from tests.pipeline_support import fresh_kafka, pipeline_settings, workers  # noqa: F401
